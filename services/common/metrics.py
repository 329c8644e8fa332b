"""Prometheus plumbing shared by every service: the /metrics listener and gRPC server metrics.

Each service declares its own metrics in its ``metrics.py``; these are the ones all of them have.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

GRPC_SERVER_HANDLED = Counter(
    "goblin_grpc_server_handled_total",
    "gRPC calls completed, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_LATENCY = Histogram(
    "goblin_grpc_server_handling_seconds",
    "Time to handle a gRPC call (to the last message for streams).",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def start_metrics_server(host: str, port: int) -> None:
    """Serve /metrics on its own port (a daemon thread inside prometheus_client)."""
    start_http_server(port, addr=host)


# Shared by the three detection points (gateway, router, rag): dashboards sum it by location.
SECRETS_DETECTED = Counter(
    "goblin_security_secrets_detected_total", "Secrets found (and redacted or blocked).", ["location"]
)
