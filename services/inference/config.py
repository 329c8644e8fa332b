"""Inference service settings."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    grpc_port: int = Field(50052, alias="GOBLIN_INFERENCE_PORT", ge=1, le=65535)
    metrics_port: int = Field(9102, alias="GOBLIN_INFERENCE_METRICS_PORT", ge=1, le=65535)
