"""RAG service settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.common.settings import DatabaseSettings, ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS


class RagSettings(ServiceSettings, DatabaseSettings):
    grpc_port: int = Field(GRPC_PORTS["rag"], alias="GOBLIN_RAG_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["rag"], alias="GOBLIN_RAG_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_RAG_PROBE_PORT", ge=0, le=65535)
    # http://host:port of a Chroma server; unset: an embedded PersistentClient in chroma_path.
    chroma_url: str | None = Field(None, alias="CHROMA_URL")
    chroma_path: Path | None = Field(None, alias="GOBLIN_CHROMA_PATH")

    @field_validator("chroma_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("CHROMA_URL: must be an http:// or https:// URL of a Chroma server")
        return value or None

    @model_validator(mode="after")
    def _default_path(self) -> RagSettings:
        if self.production and self.chroma_url is None:
            # SPEC: the embedded stores are for one developer's machine.
            raise ValueError("CHROMA_URL: required in production (the embedded Chroma is refused)")
        if self.chroma_path is None:
            self.chroma_path = self.goblin_home / "chroma"
        return self
