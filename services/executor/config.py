"""Executor service settings."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import DatabaseSettings, ServiceSettings


class ExecutorSettings(ServiceSettings, DatabaseSettings):
    grpc_port: int = Field(50055, alias="GOBLIN_EXECUTOR_PORT", ge=1, le=65535)
    metrics_port: int = Field(9105, alias="GOBLIN_EXECUTOR_METRICS_PORT", ge=1, le=65535)
