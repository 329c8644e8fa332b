"""Where the gateway finds each backend's Prometheus listener, for the KPI document
(:mod:`services.gateway.kpi_sources`): mixed into :class:`~services.gateway.config.GatewaySettings`."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings

from services.common.topology import BACKEND_SERVICES, METRICS_PORTS


class PeerMetricsSettings(BaseSettings):
    """Each backend's Prometheus port (the supervisor gives every child all of them), mixed into the
    gateway's settings; ``GOBLIN_<SERVICE>_METRICS_URL`` overrides the whole address when the metrics
    listener is not on the host of the gRPC address (a sidecar, another Service name)."""

    router_metrics_port: int = Field(METRICS_PORTS["router"], alias="GOBLIN_ROUTER_METRICS_PORT", ge=0, le=65535)
    inference_metrics_port: int = Field(
        METRICS_PORTS["inference"], alias="GOBLIN_INFERENCE_METRICS_PORT", ge=0, le=65535
    )
    rag_metrics_port: int = Field(METRICS_PORTS["rag"], alias="GOBLIN_RAG_METRICS_PORT", ge=0, le=65535)
    auth_metrics_port: int = Field(METRICS_PORTS["auth"], alias="GOBLIN_AUTH_METRICS_PORT", ge=0, le=65535)
    executor_metrics_port: int = Field(METRICS_PORTS["executor"], alias="GOBLIN_EXECUTOR_METRICS_PORT", ge=0, le=65535)
    router_metrics_url: str = Field("", alias="GOBLIN_ROUTER_METRICS_URL")
    inference_metrics_url: str = Field("", alias="GOBLIN_INFERENCE_METRICS_URL")
    rag_metrics_url: str = Field("", alias="GOBLIN_RAG_METRICS_URL")
    auth_metrics_url: str = Field("", alias="GOBLIN_AUTH_METRICS_URL")
    executor_metrics_url: str = Field("", alias="GOBLIN_EXECUTOR_METRICS_URL")


def metrics_urls(settings: Any) -> dict[str, str]:
    """Each backend's ``/metrics`` URL: the override, else ``http://<host of its gRPC address>:<port>``
    (a Unix-socket service, such as inference under systemd, listens for metrics on loopback)."""
    urls = {}
    for name in BACKEND_SERVICES:
        override = getattr(settings, f"{name}_metrics_url", "")
        port = getattr(settings, f"{name}_metrics_port", METRICS_PORTS[name])
        if override:
            urls[name] = override
        elif port:
            urls[name] = f"http://{grpc_host(settings.peer_addresses()[name])}:{port}/metrics"
    return urls


def grpc_host(address: str) -> str:
    """The host of a gRPC target (``host:port``, ``dns:///host:port``, ``[v6]:port``, ``unix:...``)."""
    if address.startswith("unix:"):
        return "127.0.0.1"
    target = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host = target.rsplit(":", 1)[0] if ":" in target else target
    return host if host.startswith("[") or ":" not in host else f"[{host}]"
