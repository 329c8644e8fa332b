"""Executor benchmark: POST-to-start latency on an idle suite, and tasks/s through the queue with two
executors (the suite's and one more process), for the trivial ``hello`` goblin.

    PATH=.venv/bin:$PATH python -m bench.executor_bench [--tasks 200] [--latency 50]

Start latency is the task row's ``started_at - created_at`` (the claim; the process starts a few ms
later, see goblin_executor_start_latency_seconds), from sequential POSTs with the queue empty.
"""

from __future__ import annotations

import argparse
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
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="goblin-exec-bench-"))
    # A PostgreSQL of the benchmark's own, so the second executor process can be given its URL.
    postgres = EmbeddedPostgres(home / "pg")
    suite = start_suite(
        home / "suite", DATABASE_URL=postgres.create_database("bench"), GOBLIN_EXECUTOR_MAX_QUEUED_PER_TENANT="100000"
    )
    replica = None
    try:
        suite.wait_ready()
        with suite.admin_client() as client:
            starts = []
            for _ in range(options.latency):
                task = client.post("/v1/tasks", json={"goblin": "hello"}).json()
                done = wait_final(client, task["id"])
                starts.append((_ts(done["started_at"]) - _ts(done["created_at"])) * 1000)
            replica = ExecutorProcess(suite, home / "replica.log")
            replica.wait_serving()
            began = time.monotonic()
            ids = [client.post("/v1/tasks", json={"goblin": "hello"}).json()["id"] for _ in range(options.tasks)]
            for task_id in ids:
                wait_final(client, task_id, timeout_s=300)
            elapsed = time.monotonic() - began
        print(f"start latency (claim - created), {len(starts)} sequential tasks on an idle suite:")
        p50, p99 = statistics.median(starts), percentile(starts, 0.99)
        print(f"  p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {max(starts):.1f} ms")
        rate = options.tasks / elapsed
        print(f"throughput, two executors x 2 workers: {options.tasks} tasks in {elapsed:.1f} s = {rate:.1f} tasks/s")
    finally:
        if replica is not None:
            replica.stop()
        suite.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
