"""Router service settings."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import DatabaseSettings, ServiceSettings


class RouterSettings(ServiceSettings, DatabaseSettings):
    grpc_port: int = Field(50051, alias="GOBLIN_ROUTER_PORT", ge=1, le=65535)
    metrics_port: int = Field(9101, alias="GOBLIN_ROUTER_METRICS_PORT", ge=1, le=65535)
