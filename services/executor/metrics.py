"""The executor's Prometheus metrics (SPEC.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter("goblin_executor_tasks_total", "Tasks that reached a final status, by status.", ["status"])
TASK_DURATION = Histogram(
    "goblin_executor_task_duration_seconds",
    "Run time of a task's process, from start to exit.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
QUEUE_DEPTH = Gauge("goblin_executor_queue_depth", "Tasks queued in Postgres (all replicas), as last counted.")
START_LATENCY = Histogram(
    "goblin_executor_start_latency_seconds",
    "From a task's creation to its process starting.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
