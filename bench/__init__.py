"""Benchmarks: `make bench` runs them and rewrites their sections of bench/RESULTS.md."""
