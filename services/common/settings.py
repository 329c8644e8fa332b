"""Settings base: environment variables, secrets from ``NAME_FILE``, one-line errors on bad values.

Every service declares one subclass of :class:`GoblinSettings`. Field ``database_url`` is read from
``DATABASE_URL``; a secret may instead be given as ``DATABASE_URL_FILE=/run/secrets/db`` (Kubernetes
secrets, Vault agent files). A bad or missing value stops start-up with one line that names the variable.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.common.topology import BACKEND_SERVICES, PROBE_PORT_OFFSET, default_address

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class Environment(StrEnum):
    development = "development"
    production = "production"


class ConfigError(Exception):
    """A configuration value is missing or wrong. ``str()`` is the one line shown to the operator."""


def env_name(field_name: str, field: FieldInfo) -> str:
    """The environment variable a settings field is read from."""
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return (alias or field_name).upper()


def secret_file(name: str) -> str | None:
    """The contents of the file ``NAME_FILE`` names (stripped), or None when it is not set. Raises
    :class:`ConfigError` naming the variable when the file cannot be read."""
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``NAME`` from the file named by ``NAME_FILE`` when ``NAME`` itself is not set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field_name, field)
        if os.environ.get(name):
            return None, field_name, False
        return secret_file(name), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


def default_home() -> Path:
    return Path(os.environ.get("GOBLIN_HOME", ".goblin")).absolute()


class GoblinSettings(BaseSettings):
    """What every service knows: where things live, where its peers listen, how to log."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True)

    goblin_env: Environment = Environment.development
    goblin_home: Path = Field(default_factory=default_home)
    log_level: str = "INFO"
    bind_host: str = Field("127.0.0.1", alias="GOBLIN_BIND_HOST")
    # Where each service listens for gRPC. Clients dial these; servers bind their own port.
    router_addr: str = Field(default_address("router"), alias="GOBLIN_ROUTER_ADDR")
    inference_addr: str = Field(default_address("inference"), alias="GOBLIN_INFERENCE_ADDR")
    rag_addr: str = Field(default_address("rag"), alias="GOBLIN_RAG_ADDR")
    auth_addr: str = Field(default_address("auth"), alias="GOBLIN_AUTH_ADDR")
    executor_addr: str = Field(default_address("executor"), alias="GOBLIN_EXECUTOR_ADDR")
    grpc_grace_s: float = Field(5.0, alias="GOBLIN_GRPC_GRACE_S", gt=0)
    # Mutual TLS between services (services.common.tls): unset, the files `goblin up` issued under
    # GOBLIN_HOME/tls/ (ca.pem, <service>.pem, <service>-key.pem); production requires all three
    # (checked when the service loads them: services.common.tls.load_grpc_tls).
    grpc_tls_ca_file: Path | None = Field(None, alias="GOBLIN_GRPC_TLS_CA_FILE")
    grpc_tls_cert_file: Path | None = Field(None, alias="GOBLIN_GRPC_TLS_CERT_FILE")
    grpc_tls_key_file: Path | None = Field(None, alias="GOBLIN_GRPC_TLS_KEY_FILE")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileSecretsSource(settings_cls)

    @model_validator(mode="after")
    def _log_level_known(self) -> Self:
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL: unknown level {self.log_level!r}")
        self.log_level = self.log_level.upper()
        return self

    @property
    def production(self) -> bool:
        return self.goblin_env is Environment.production

    def peer_addresses(self) -> dict[str, str]:
        """gRPC address of every backend service, by service name."""
        return {name: getattr(self, f"{name}_addr") for name in BACKEND_SERVICES}


class ServiceSettings(GoblinSettings):
    """A gRPC service: its own port and its Prometheus port. Subclasses set the defaults and aliases."""

    grpc_port: int = Field(0, ge=0, le=65535)
    metrics_port: int = Field(0, ge=0, le=65535)
    # Plaintext grpc.health.v1 and nothing else, for probes that cannot present a client certificate;
    # 0 means the gRPC port + PROBE_PORT_OFFSET.
    probe_port: int = Field(0, ge=0, le=65535)

    @model_validator(mode="after")
    def _default_probe_port(self) -> Self:
        if self.probe_port == 0 and self.grpc_port:
            self.probe_port = self.grpc_port + PROBE_PORT_OFFSET
        return self

    def grpc_listen_address(self) -> str:
        """Where the gRPC server binds (mutual TLS): ``host:port``; a subclass may return ``unix:/path``."""
        return f"{self.bind_host}:{self.grpc_port}"


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    fields = cls.model_fields
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        field_name = str(loc[0]) if loc else ""
        field = fields.get(field_name)
        if field is None:
            # validation_alias lookups report the alias; model validators report no field at all.
            match = next((n for n, f in fields.items() if env_name(n, f) == field_name.upper()), None)
            field = fields.get(match) if match else None
            field_name = match or field_name
        name = env_name(field_name, field) if field is not None else ""
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        if name and not msg.startswith(name):
            given = err.get("input")
            shown = "" if err.get("type") == "missing" or isinstance(given, dict) else f" (got {given!r})"
            if field is not None and is_secret(field_name):
                shown = ""
            lines.append(f"{name}: {msg}{shown}")
        else:
            lines.append(msg)
    return "; ".join(lines)


def is_secret(field_name: str) -> bool:
    lowered = field_name.lower()
    return any(word in lowered for word in ("password", "secret", "key", "token", "url"))


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings or raise :class:`ConfigError` with one line naming the variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(cls, exc)) from None


def load_or_exit(cls: type[SettingsT]) -> SettingsT:
    """For ``__main__``: settings, or a one-line message on stderr and exit status 2."""
    try:
        return load_settings(cls)
    except ConfigError as exc:
        print(f"goblin: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class DatabaseSettings(BaseSettings):
    """Mixed into the settings of services that use PostgreSQL."""

    database_url: SecretStr = Field(alias="DATABASE_URL")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL: must be a postgresql:// URL")
        return value


class RedisSettings(BaseSettings):
    """Mixed into the settings of services that use Redis."""

    redis_url: SecretStr = Field(alias="REDIS_URL")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL: must be a redis://, rediss:// or unix:// URL")
        return value
