"""Executor benchmark: POST-to-start latency on an idle suite, and tasks/s through the queue with two
executors (the suite's and one more process), for the trivial ``hello`` goblin.

    PATH=.venv/bin:$PATH python -m bench.executor_bench [--tasks 200] [--latency 50] [--warmup 3]

Start latency is measured to the task's process itself: sequential POSTs, with the queue empty, of a
script ``echo $EPOCHREALTIME`` (a bash builtin: the clock read as the task's shell starts, in its
sandbox), against the client's clock just before the POST (one machine, one clock). It is split
into its stages: POST to the row's ``created_at`` (gateway, RunTask, the insert), ``created_at`` to
``started_at`` (the NOTIFY wake-up and the claim), and ``started_at`` to the shell's first line
(task directory, the zygote's fork of the launcher, bubblewrap, bash).

The first ``--warmup`` tasks are run the same way and left out of the percentiles: the first request
opens the gateway's channel to the executor and the pools' first connections (printed apart, so a
slow first request is seen rather than hidden). The load average is printed beside the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from goblin_tools.embedded import EmbeddedPostgres
from goblin_tools.suite import start_suite
from tests.integration.executor_support import ExecutorProcess, wait_final


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="goblin-exec-bench-"))
    # A PostgreSQL of the benchmark's own, so the second executor process can be given its URL.
    postgres = EmbeddedPostgres(home / "pg")
    suite = start_suite(
        home / "suite",
        DATABASE_URL=postgres.create_database("bench"),
        GOBLIN_EXECUTOR_MAX_QUEUED_PER_TENANT="100000",
        GOBLIN_EXECUTOR_ALLOW_SCRIPTS="true",
    )
    replica = None
    try:
        suite.wait_ready()
        with suite.admin_client() as client:
            stages: dict[str, list[float]] = {"POST to process start": [], "POST to row": [], "claim": [], "spawn": []}
            for _ in range(options.warmup + options.latency):
                posted = time.time()
                task = client.post("/v1/tasks", json={"script": "echo $EPOCHREALTIME"}).json()
                done = wait_final(client, task["id"])
                assert done["status"] == "succeeded", done
                began = float(done["stdout"].strip())
                created, claimed = _ts(done["created_at"]), _ts(done["started_at"])
                for name, value in (
                    ("POST to process start", began - posted),
                    ("POST to row", created - posted),
                    ("claim", claimed - created),
                    ("spawn", began - claimed),
                ):
                    stages[name].append(value * 1000)
            replica = ExecutorProcess(suite, home / "replica.log")
            replica.wait_serving()
            began = time.monotonic()
            ids = [client.post("/v1/tasks", json={"goblin": "hello"}).json()["id"] for _ in range(options.tasks)]
            for task_id in ids:
                wait_final(client, task_id, timeout_s=300)
            elapsed = time.monotonic() - began
        load = "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"start latency, {options.latency} sequential tasks on an idle suite ({load}):")
        for name, values in stages.items():
            warm, measured = values[: options.warmup], values[options.warmup :]
            p50, p99 = statistics.median(measured), percentile(measured, 0.99)
            slowest = max(range(len(measured)), key=measured.__getitem__)
            print(
                f"  {name:22s} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {measured[slowest]:6.1f} ms"
                f" (task {slowest + 1})  warm-up {', '.join(f'{value:.1f}' for value in warm)} ms"
            )
        rate = options.tasks / elapsed
        print(f"throughput, two executors x 2 workers: {options.tasks} tasks in {elapsed:.1f} s = {rate:.1f} tasks/s")
        print("load average at the end: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    finally:
        if replica is not None:
            replica.stop()
        suite.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
