"""Executor service settings."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import DatabaseSettings, ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS


class ExecutorSettings(ServiceSettings, DatabaseSettings):
    grpc_port: int = Field(GRPC_PORTS["executor"], alias="GOBLIN_EXECUTOR_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["executor"], alias="GOBLIN_EXECUTOR_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_EXECUTOR_PROBE_PORT", ge=0, le=65535)
