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

# Remote providers Goblin knows out of the box (each reads ``<NAME>_API_KEY`` / ``<NAME>_BASE_URL``);
# ``local`` is the inference service.
REMOTE_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "gemini", "deepseek", "grok", "moonshot", "siliconflow")
LOCAL_PROVIDER = "local"
KNOWN_PROVIDERS: frozenset[str] = frozenset({LOCAL_PROVIDER, *REMOTE_PROVIDERS})


def default_address(service: str) -> str:
    """Where a client dials ``service`` when nothing else is configured."""
    return f"127.0.0.1:{GRPC_PORTS[service]}"
