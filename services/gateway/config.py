"""Gateway settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.common.settings import ConfigError, GoblinSettings


class GatewaySettings(GoblinSettings):
    port: int = Field(8443, alias="GOBLIN_GATEWAY_PORT", ge=1, le=65535)
    tls_cert_file: Path | None = Field(None, alias="GOBLIN_TLS_CERT_FILE")
    tls_key_file: Path | None = Field(None, alias="GOBLIN_TLS_KEY_FILE")
    cors_origins: str = Field("", alias="CORS_ORIGINS")
    # How long /health/ready waits for each service's health answer.
    health_timeout_s: float = Field(1.0, alias="GOBLIN_HEALTH_TIMEOUT_S", gt=0, le=30)
    auth_cache_ttl_s: float = Field(30.0, alias="GOBLIN_AUTH_CACHE_TTL_S", ge=0, le=300)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in filter(None, (o.strip() for o in value.split(","))):
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS_ORIGINS: {origin!r} is not an http(s) origin")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("GOBLIN_TLS_CERT_FILE and GOBLIN_TLS_KEY_FILE: set both or neither")
        for name, path in (
            ("GOBLIN_TLS_CERT_FILE", self.tls_cert_file),
            ("GOBLIN_TLS_KEY_FILE", self.tls_key_file),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        if self.production and self.tls_cert_file is None:
            raise ValueError("GOBLIN_TLS_CERT_FILE: required in production (dev certificates are refused)")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def tls_dir(self) -> Path:
        return self.goblin_home / "tls"

    def require_tls_files(self) -> tuple[Path, Path]:
        if self.tls_cert_file is None or self.tls_key_file is None:
            raise ConfigError("TLS files not resolved; call ensure_dev_certificates first")
        return self.tls_cert_file, self.tls_key_file
