"""Auth service settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from services.common.settings import DatabaseSettings, RedisSettings, ServiceSettings


class AuthSettings(ServiceSettings, DatabaseSettings, RedisSettings):
    grpc_port: int = Field(50054, alias="GOBLIN_AUTH_PORT", ge=1, le=65535)
    metrics_port: int = Field(9104, alias="GOBLIN_AUTH_METRICS_PORT", ge=1, le=65535)
    admin_email: str = Field("admin@goblin.local", alias="GOBLIN_ADMIN_EMAIL", min_length=3)
    admin_password: SecretStr | None = Field(None, alias="GOBLIN_ADMIN_PASSWORD")
    admin_key_file: Path | None = Field(None, alias="GOBLIN_ADMIN_KEY_FILE")

    @model_validator(mode="after")
    def _defaults(self) -> AuthSettings:
        if self.admin_key_file is None:
            self.admin_key_file = self.goblin_home / "admin.key"
        if "@" not in self.admin_email:
            raise ValueError(f"GOBLIN_ADMIN_EMAIL: not an email address ({self.admin_email!r})")
        return self
