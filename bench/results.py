"""Writing benchmark results: one section per benchmark in bench/RESULTS.md, with the machine."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from services.common.process import usable_cores

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Written by `make bench` (each section by its own benchmark). This machine is shared and noisy:\n"
    "numbers are medians over repeated runs, compared with a baseline measured in the same run.\n"
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = 0
    cores = usable_cores()
    return f"{cores} cores ({cpu}), {memory_gib:.0f} GiB, Python {platform.python_version()}"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def micro_table(results: dict[str, list[float]], part: str) -> str:
    """The micro benchmarks' markdown table: each case's median and minimum CPU µs per call over rounds."""
    lines = [f"| {part} | CPU per call, median (µs) | min |", "| --- | --- | --- |"]
    lines += [f"| {name} | {median(values):.1f} | {min(values):.1f} |" for name, values in results.items()]
    return "\n".join(lines)


def write_section(title: str, body: str, command: str) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md; with ``BENCH_NO_WRITE`` set (a trial
    run), leave it alone."""
    if os.environ.get("BENCH_NO_WRITE"):
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {title}\n\nCommand: `{command}` · machine: {machine()} · commit {commit()} · {stamp}\n\n{body.strip()}\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")
