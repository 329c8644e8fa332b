"""Prometheus plumbing shared by every service: the /metrics listener and gRPC server metrics.

Each service declares its own metrics in its ``metrics.py``; these are the ones all of them have.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


# What process_resident_memory_bytes is measured against by the MemoryHigh alert: the container's or
# systemd unit's cgroup limit when it has one, else the machine's memory (a bare process has no other).
MEMORY_LIMIT = Gauge("goblin_process_memory_limit_bytes", "Memory this process may use: its cgroup limit, else RAM.")
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_bytes() -> int:
    """The cgroup (v2, then v1) memory limit of this process, or the machine's RAM when unlimited."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < ram:  # "max", or v1's huge "unlimited" number: RAM is the bound
            return int(text)
    return ram


MEMORY_LIMIT.set_function(memory_limit_bytes)  # read at each scrape: a resized container shows its new limit


def start_metrics_server(host: str, port: int) -> None:
    """Serve /metrics on its own port (a daemon thread inside prometheus_client)."""
    start_http_server(port, addr=host)


# Shared by the three detection points (gateway, router, rag): dashboards sum it by location.
SECRETS_DETECTED = Counter(
    "goblin_security_secrets_detected_total", "Secrets found (and redacted or blocked).", ["location"]
)

# When the mutual-TLS files a process loaded stop being valid (the alert warns weeks before). A gauge per
# process, so a certificate renewed on disk but not yet reloaded still shows the old date.
TLS_CERT_NOT_AFTER = Gauge(
    "goblin_tls_certificate_not_after_timestamp_seconds",
    "notAfter of the suite certificates this process loaded, as a Unix time.",
    ["certificate"],
)
