"""Gateway settings."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.common.secrets import SecretScanningSettings
from services.common.settings import ConfigError, DatabaseSettings, GoblinSettings, RedisSettings
from services.gateway.ratelimit import RouteClass, parse_limits


class GatewaySettings(GoblinSettings, DatabaseSettings, RedisSettings, SecretScanningSettings):
    port: int = Field(8443, alias="GOBLIN_GATEWAY_PORT", ge=1, le=65535)
    # Prometheus's own listener (plain HTTP, /metrics only; 0: none). In production the public
    # /metrics needs an admin credential, so the chart scrapes this port, which it does not publish.
    metrics_port: int = Field(0, alias="GOBLIN_GATEWAY_METRICS_PORT", ge=0, le=65535)
    tls_cert_file: Path | None = Field(None, alias="GOBLIN_TLS_CERT_FILE")
    tls_key_file: Path | None = Field(None, alias="GOBLIN_TLS_KEY_FILE")
    cors_origins: str = Field("", alias="CORS_ORIGINS")
    # How long /health/ready waits for each service's health answer.
    health_timeout_s: float = Field(1.0, alias="GOBLIN_HEALTH_TIMEOUT_S", gt=0, le=30)
    auth_cache_ttl_s: float = Field(30.0, alias="GOBLIN_AUTH_CACHE_TTL_S", ge=0, le=300)
    rate_limit_enabled: bool = Field(True, alias="GOBLIN_RATE_LIMIT_ENABLED")
    rate_limit_auth: str = Field("10/minute", alias="GOBLIN_RATE_LIMIT_AUTH")
    rate_limit_chat: str = Field("30/minute", alias="GOBLIN_RATE_LIMIT_CHAT")
    rate_limit_health: str = Field("60/minute", alias="GOBLIN_RATE_LIMIT_HEALTH")
    rate_limit_default: str = Field("100/minute", alias="GOBLIN_RATE_LIMIT_DEFAULT")
    # Public keys: fetched by every verifier's replicas, so generous; a class of its own.
    rate_limit_jwks: str = Field("600/minute", alias="GOBLIN_RATE_LIMIT_JWKS")
    # One user's ceiling across all their credentials and every class: more keys, no more capacity.
    rate_limit_user: str = Field("200/minute", alias="GOBLIN_RATE_LIMIT_USER")
    # An extra limit every class also obeys, for short bursts: e.g. "20/second".
    rate_limit_burst: str = Field("", alias="GOBLIN_RATE_LIMIT_BURST")
    rate_limit_fail_open: bool = Field(True, alias="GOBLIN_RATE_LIMIT_FAIL_OPEN")
    trusted_proxies: str = Field("", alias="GOBLIN_TRUSTED_PROXIES", description="CIDRs, comma-separated")
    max_body_bytes: int = Field(1024 * 1024, alias="GOBLIN_MAX_BODY_BYTES", ge=1024)
    # Document uploads (POST /v1/collections/{c}/documents): the rag service refuses documents over 10 MiB;
    # a multipart or JSON body holding one is a little larger.
    max_document_body_bytes: int = Field(11 * 1024 * 1024, alias="GOBLIN_MAX_DOCUMENT_BODY_BYTES", ge=1024)
    # Chat completions may carry images as data: URLs (up to 5 MiB each, services.common.chat_content).
    max_chat_body_bytes: int = Field(16 * 1024 * 1024, alias="GOBLIN_MAX_CHAT_BODY_BYTES", ge=1024)
    request_timeout_s: float = Field(30.0, alias="GOBLIN_REQUEST_TIMEOUT_S", gt=0)
    chat_timeout_s: float = Field(600.0, alias="GOBLIN_CHAT_TIMEOUT_S", gt=0)

    @field_validator(
        "rate_limit_auth",
        "rate_limit_chat",
        "rate_limit_health",
        "rate_limit_default",
        "rate_limit_jwks",
        "rate_limit_user",
    )
    @classmethod
    def _limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    @field_validator("rate_limit_burst")
    @classmethod
    def _burst(cls, value: str) -> str:
        if value.strip():
            parse_limits(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for cidr in filter(None, (c.strip() for c in value.split(","))):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"GOBLIN_TRUSTED_PROXIES: {cidr!r} is not an IP address or CIDR") from None
        return value

    def rate_limits(self) -> dict[RouteClass, list]:
        return {
            RouteClass.auth: parse_limits(self.rate_limit_auth),
            RouteClass.jwks: parse_limits(self.rate_limit_jwks),
            RouteClass.chat: parse_limits(self.rate_limit_chat),
            RouteClass.health: parse_limits(self.rate_limit_health),
            RouteClass.default: parse_limits(self.rate_limit_default),
        }

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [c.strip() for c in self.trusted_proxies.split(",") if c.strip()]

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
