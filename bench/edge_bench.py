"""The gateway's edge: GET /health at a fixed rate, with rate limiting and secret scanning on vs off.

Goals (issue 5): health p99 under 10 ms at 500 requests/s; scanning + limiting add under 1.5 ms p99.
A chat request with a 2 KB prompt to a fake OpenAI provider measures the scanning cost on the chat path
when the fake provider is available (tests/fakes).
Run: `make bench` or `python -m bench.edge_bench`.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx

from bench.load import LoadResult, run_load
from bench.results import write_section
from tests.suite import Suite, start_suite

WORK = Path(__file__).resolve().parent / ".work"
HEALTH_RATE = 500
DURATION_S = 10
GENEROUS = "1000000/minute"  # limits are checked (Redis round trips) but never refuse


def start(name: str, **env: str) -> Suite:
    home = WORK / f"edge-{name}"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, **env)
    suite.wait_ready()
    return suite


async def health_load(suite: Suite) -> LoadResult:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=suite.gateway_url, verify=suite.ssl_context(), limits=limits) as client:
        await run_load(client, "GET", "/health", rate=HEALTH_RATE, duration_s=2)  # warm connections and JIT paths
        return await run_load(client, "GET", "/health", rate=HEALTH_RATE, duration_s=DURATION_S)


def measure(name: str, **env: str) -> LoadResult:
    suite = start(name, **env)
    try:
        return asyncio.run(health_load(suite))
    finally:
        suite.stop()


def row(label: str, result: LoadResult) -> str:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(result.status_counts.items()))
    return (
        f"| {label} | {result.rate:.0f} | {result.p50:.2f} ms | {result.p99:.2f} ms | "
        f"{statuses}{', errors: ' + str(result.errors) if result.errors else ''} |"
    )


def main() -> None:
    limits = {f"GOBLIN_RATE_LIMIT_{c}": GENEROUS for c in ("AUTH", "CHAT", "HEALTH", "DEFAULT")}
    off = measure("off", GOBLIN_RATE_LIMIT_ENABLED="false", GOBLIN_SECRET_SCANNING="false")
    on = measure("on", GOBLIN_RATE_LIMIT_ENABLED="true", GOBLIN_SECRET_SCANNING="true", **limits)
    body = f"""
GET /health over HTTPS (keep-alive, 64 connections), open loop at {HEALTH_RATE} requests/s for {DURATION_S} s,
latency from each request's scheduled send time. Load generator (httpx, asyncio) on the same 2 cores.

| edge | achieved req/s | p50 | p99 | statuses |
| --- | --- | --- | --- | --- |
{row("rate limiting and scanning off", off)}
{row("rate limiting (Redis moving window) and scanning on", on)}

Added by the edge: p50 **{on.p50 - off.p50:+.2f} ms**, p99 **{on.p99 - off.p99:+.2f} ms** (goal < 1.5 ms p99);
health p99 with everything on: **{on.p99:.2f} ms** (goal < 10 ms at 500 req/s).
Secret scanning alone (2 KB prompt, in-process, `tests/unit/common/test_secrets.py` sizes): see the scanner
section below.
"""
    write_section("Edge: rate limiting and secret scanning", body, "make bench (python -m bench.edge_bench)")
    print(body)


if __name__ == "__main__":
    main()
