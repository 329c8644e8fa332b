"""The throughput sweep's and the soak's tables and plots (matplotlib, headless)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import NullLocator  # noqa: E402

from bench.throughput_load import Step, failure, highest_holding  # noqa: E402

MB = 1024 * 1024


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def sweep_table(steps: list[Step]) -> str:
    """One markdown row per target and offered rate, in the order the targets were given, with the verdict
    of the stop rule."""
    lines = [
        "| target | offered /s | served /s | p50 ms | p99 ms | errors | generator CPU ms/req "
        "| target CPU ms/req | send lag p99 ms | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    targets = list(dict.fromkeys(step.target for step in steps))
    for target in targets:
        for step in sorted((s for s in steps if s.target == target), key=lambda s: s.offered):
            why = failure(step)
            errors = str(step.errors)
            if step.error_kinds:
                errors += " (" + ", ".join(f"{kind} {n}" for kind, n in step.error_kinds) + ")"
            lines.append(
                f"| {target} | {step.offered:.0f} | {step.served:.0f} | {_ms(step.p50_ms)} | {_ms(step.p99_ms)} "
                f"| {errors} | {step.generator_cpu_ms:.2f} | {_ms(step.target_cpu_ms)} "
                f"| {_ms(step.send_lag_p99_ms)} | {'holds' if why is None else 'fails: ' + why} |"
            )
    return "\n".join(lines)


def error_examples(steps: list[Step]) -> str:
    """A line per target and error kind: the first error's text (its body's start, or the exception)."""
    seen: dict[tuple[str, str], str] = {}
    for step in steps:
        for kind, example in step.error_examples:
            seen.setdefault((step.target, kind), example)
    return "\n".join(
        f"- {target}, {kind}: `{' '.join(example.split())[:200].replace('`', chr(39))}`"
        for (target, kind), example in seen.items()
    )


def holding_rates(steps: list[Step]) -> dict[str, float]:
    """Each target's highest offered rate that held."""
    targets = list(dict.fromkeys(step.target for step in steps))
    return {target: highest_holding([s for s in steps if s.target == target]) for target in targets}


def sweep_plot(steps: list[Step], path: Path, title: str) -> Path:
    """p50 (dashed) and p99 (solid) latency against offered rate, a line per target, log-scaled latency;
    a failed step is marked with an x."""
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    targets = list(dict.fromkeys(step.target for step in steps))
    for index, target in enumerate(targets):
        color = f"C{index}"
        mine = sorted((s for s in steps if s.target == target), key=lambda s: s.offered)
        rates = [s.offered for s in mine]
        axes.plot(rates, [s.p99_ms for s in mine], "-o", color=color, label=f"{target} p99")
        axes.plot(rates, [s.p50_ms for s in mine], "--.", color=color, label=f"{target} p50")
        failed = [s for s in mine if failure(s) is not None]
        axes.plot([s.offered for s in failed], [s.p99_ms for s in failed], "x", color=color, markersize=12)
    axes.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xscale("log", base=2)
    offered = sorted({s.offered for s in steps})
    axes.set_xticks(offered, [f"{r:g}" for r in offered])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (requests/s)")
    axes.set_ylabel("latency (ms, from scheduled send)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


@dataclass(frozen=True)
class Memory:
    """One process's RSS over a soak."""

    name: str
    start_mb: float
    end_mb: float
    max_mb: float
    last_third_growth: float  # fraction, from a least-squares line over the last third of the samples


def growth(times: list[float], values: list[float]) -> float:
    """The relative growth over ``times`` of the least-squares line through ``values`` (a GC's sawtooth
    moves one sample, not the line)."""
    if len(values) < 2:
        return 0.0
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if not spread:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    first = mean_v + slope * (times[0] - mean_t)
    return slope * (times[-1] - times[0]) / first if first else 0.0


def memory_summary(samples: dict[str, list[tuple[float, int]]]) -> list[Memory]:
    """Start, end, max and last-third growth of each process's ``(seconds, rss bytes)`` samples."""
    rows = []
    for name, series in samples.items():
        if not series:
            continue
        times = [t for t, _ in series]
        values = [rss / MB for _, rss in series]
        last = [i for i, t in enumerate(times) if t >= times[0] + (times[-1] - times[0]) * 2 / 3]
        rows.append(
            Memory(
                name=name,
                start_mb=values[0],
                end_mb=values[-1],
                max_mb=max(values),
                last_third_growth=growth([times[i] for i in last], [values[i] for i in last]),
            )
        )
    return rows


def memory_table(rows: list[Memory]) -> str:
    lines = [
        "| process | start MB | end MB | max MB | growth over the last third |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.start_mb:.1f} | {row.end_mb:.1f} | {row.max_mb:.1f} "
            f"| {row.last_third_growth * 100:+.2f} % |"
        )
    return "\n".join(lines)


def memory_plot(samples: dict[str, list[tuple[float, int]]], path: Path, title: str) -> Path:
    """RSS (MB) against time, a line per process."""
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    for name, series in samples.items():
        if series:
            axes.plot([t / 60 for t, _ in series], [rss / MB for _, rss in series], "-", label=name)
    axes.set_xlabel("minutes into the soak")
    axes.set_ylabel("RSS (MB)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
