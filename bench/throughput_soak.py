"""The soak: Goblin alone at a steady open-loop rate for a long time, every suite process's memory sampled.

``python -m bench.throughput --soak 1800 --rate 100``: the same request as the sweep's goblin target (HTTPS,
an API key, every feature on) at ``--rate`` requests/s for ``--soak`` seconds, while every process of
the suite is sampled every ``--sample-every`` seconds: each Goblin service and ``goblin up`` by RSS;
embedded Redis by RSS; embedded PostgreSQL as one row, the proportional set size (PSS) summed over its
server and backends (their RSS would count the shared buffers once per backend). Reported: start, end
and max per process and the growth over the last third (the least-squares line through those samples,
so one garbage collection's sawtooth does not decide it), the goal being gateway and router <= 150 MB
and < 2 % growth over the last 10 of 30 minutes; the latency and errors of the whole run; a plot of
memory against time. Section "Throughput soak" of bench/RESULTS.md and bench/throughput_soak.png.
"""

from __future__ import annotations

import argparse
import time
from contextlib import suppress
from pathlib import Path

import psutil

from bench.results import write_section
from bench.throughput import (
    fake_provider,
    goblin_path,
    goblin_suite,
    load_average,
    plot_path,
    suite_processes,
    warm_up,
)
from bench.throughput_load import Generator, Step, failure
from bench.throughput_report import error_examples, memory_plot, memory_summary, memory_table

GOAL_MB = 150.0
GOAL_GROWTH = 0.02


def label(process: psutil.Process) -> str:
    """A stable name for a suite process: ``gateway`` for ``python -m services.gateway``, ``goblin up``,
    ``postgres``, ``redis``, or the executable's name."""
    cmdline = process.cmdline()
    for part in cmdline:
        if part.startswith("services."):
            return part.removeprefix("services.")
    if any(part.endswith("goblin") for part in cmdline[:2]) and "up" in cmdline:
        return "goblin up"
    name = process.name()
    if name.startswith("postgres") or (cmdline and cmdline[0].startswith("postgres")):
        return "postgres"
    if name.startswith("redis"):
        return "redis"
    return name


def sample(processes: list[psutil.Process]) -> dict[str, int]:
    """Bytes of memory by label: RSS, except postgres's PSS summed over its processes."""
    out: dict[str, int] = {}
    for process in processes:
        with suppress(psutil.Error):
            name = label(process)
            if name == "postgres":
                out[name] = out.get(name, 0) + process.memory_full_info().pss
            elif name in out:  # two processes of one name (a helper): keep them apart
                out[f"{name} {process.pid}"] = process.memory_info().rss
            else:
                out[name] = process.memory_info().rss
    return out


def run_soak(args: argparse.Namespace) -> None:
    """The soak (see the module's docstring); writes its section and plot."""
    loads_start = load_average()
    series: dict[str, list[tuple[float, int]]] = {}
    with fake_provider() as (fake_port, fake), Generator(args.generators) as generator:
        with goblin_suite("soak", fake_port) as suite:
            endpoint = goblin_path(suite, fake)
            warm_up(generator, [endpoint])
            before = endpoint.cpu()
            futures = generator.start(endpoint.target, args.rate, args.soak)
            started = time.monotonic()
            next_sample = started
            while not all(f.done() for f in futures):
                if time.monotonic() >= next_sample:
                    elapsed = time.monotonic() - started
                    for name, value in sample(suite_processes(suite)).items():
                        series.setdefault(name, []).append((elapsed, value))
                    next_sample += args.sample_every
                time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
            samples = generator.collect(futures)
            step = Step.of("goblin", args.rate, args.soak, samples, endpoint.cpu_since(before))
    rows = memory_summary(series)
    plot = memory_plot(series, plot_path("throughput_soak.png"), f"Goblin at {args.rate:g} requests/s: memory")
    body = report(step, rows, args, plot, (loads_start, load_average()))
    write_section("Throughput soak", body, f"python -m bench.throughput --soak {args.soak:g} --rate {args.rate:g}")
    print(body)


def report(step: Step, rows: list, args: argparse.Namespace, plot: Path, loads: tuple[str, str]) -> str:
    verdicts = []
    for row in rows:
        if row.name in ("gateway", "router"):
            met = row.max_mb <= GOAL_MB and row.last_third_growth < GOAL_GROWTH
            verdicts.append(
                f"{row.name}: max {row.max_mb:.0f} MB, last third {row.last_third_growth * 100:+.2f} % "
                f"(**{'met' if met else 'not met'}**)"
            )
    why = failure(step)
    errors = "".join(f"; {kind} x{n}" for kind, n in step.error_kinds)
    examples = error_examples([step])
    return f"""
Goblin alone (the whole suite, HTTPS, an API key, every feature on) at {args.rate:g} requests/s open loop
for {args.soak:g} s ({args.soak / 60:.1f} min) of the throughput sweep's request; memory of every suite
process every {args.sample_every:g} s (RSS; postgres: PSS summed over its processes). Load generator
({args.generators} processes) on the same 2 cores. Load average (1, 5, 15 min) at the start {loads[0]},
at the end {loads[1]}.

The whole run: {step.sent} sent, served {step.served:.1f}/s, p50 {step.p50_ms:.2f} ms, p99
{step.p99_ms:.2f} ms, {step.errors} errors{errors}{f" (fails the sweep's rule: {why})" if why else ""}; generator CPU
{step.generator_cpu_ms:.2f} ms/request, the suite's and the fake provider's {step.target_cpu_ms:.2f} ms/request.

Goal (gateway and router <= {GOAL_MB:.0f} MB, the last third growing < {GOAL_GROWTH:.0%}, over 30 minutes):
{"; ".join(verdicts) or "no gateway or router samples"}.

{examples}

{memory_table(rows)}

Plot: `bench/{plot.name}`. (Growth: the least-squares line through the last third's samples, its rise
over that third relative to where it starts; MB = 2^20 bytes.)
"""
