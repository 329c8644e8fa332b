"""The suite's shape, named once: which backend services exist, their default ports, the known providers.

Everything that lists services or ports (the supervisor, settings, the gateway's clients, the CLI, the
tests) reads them from here, so adding a service or moving a port is one edit.
"""

from __future__ import annotations

# Backend gRPC services in port order: router 50051 ... executor 50055, metrics 9101 ... 9105.
BACKEND_SERVICES: tuple[str, ...] = ("router", "inference", "rag", "auth", "executor")
GATEWAY_PORT = 8443
GRPC_PORTS: dict[str, int] = {name: 50051 + i for i, name in enumerate(BACKEND_SERVICES)}
METRICS_PORTS: dict[str, int] = {name: 9101 + i for i, name in enumerate(BACKEND_SERVICES)}
# Each service's plaintext health port for probes (kubelet cannot present a client certificate):
# the gRPC port + 1000 unless GOBLIN_<SERVICE>_PROBE_PORT says otherwise. It serves grpc.health.v1 only.
PROBE_PORT_OFFSET = 1000
PROBE_PORTS: dict[str, int] = {name: port + PROBE_PORT_OFFSET for name, port in GRPC_PORTS.items()}

# Remote providers Goblin knows out of the box (each reads ``<NAME>_API_KEY`` / ``<NAME>_BASE_URL``);
# ``local`` is the inference service.
REMOTE_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "gemini", "deepseek", "grok", "moonshot", "siliconflow")
LOCAL_PROVIDER = "local"
KNOWN_PROVIDERS: frozenset[str] = frozenset({LOCAL_PROVIDER, *REMOTE_PROVIDERS})


def default_address(service: str) -> str:
    """Where a client dials ``service`` when nothing else is configured."""
    return f"127.0.0.1:{GRPC_PORTS[service]}"
