"""Auth service settings.

:class:`AuthPolicySettings` is how credentials are made and checked (token lifetimes, signing keys,
password hashing, lockout, passkeys); the auth service and the ``goblin users|keys`` commands share it.
:class:`AuthSettings` adds what only the running service needs (ports, stores, the bootstrap admin).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from services.common.settings import DatabaseSettings, GoblinSettings, RedisSettings, ServiceSettings
from services.common.topology import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS

KEK_BYTES = 32
KEK_HINT = (
    "32 random bytes, base64-encoded; make one with "
    "`python -c 'import base64,secrets;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'`"
)


def decode_key_encryption_key(text: str) -> bytes:
    """The raw key from its base64 (standard or URL-safe, padding optional) text form."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"GOBLIN_AUTH_KEY_ENCRYPTION_KEY: not base64 ({KEK_HINT})") from None
    if len(raw) != KEK_BYTES:
        raise ValueError(f"GOBLIN_AUTH_KEY_ENCRYPTION_KEY: {len(raw)} bytes, expected {KEK_BYTES} ({KEK_HINT})")
    return raw


def _is_local_name(host: str) -> bool:
    """localhost, a name under it, or a loopback address: what a development passkey is bound to."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthPolicySettings(GoblinSettings):
    # Seals the token-signing private keys stored in Postgres. Development generates one into
    # GOBLIN_HOME (mode 0600) when unset; production refuses to start without it.
    key_encryption_key: SecretStr | None = Field(None, alias="GOBLIN_AUTH_KEY_ENCRYPTION_KEY")
    jwt_algorithm: Literal["ES256", "EdDSA"] = Field("ES256", alias="GOBLIN_JWT_ALGORITHM")
    jwt_issuer: str = Field("goblin", alias="GOBLIN_JWT_ISSUER", min_length=1)
    jwt_audience: str = Field("goblin-api", alias="GOBLIN_JWT_AUDIENCE", min_length=1)
    jwt_leeway_s: int = Field(30, alias="GOBLIN_JWT_LEEWAY_S", ge=0, le=300)
    access_token_ttl_s: int = Field(900, alias="GOBLIN_ACCESS_TOKEN_TTL_S", ge=30, le=86400)
    # A session is one sign-in: its refresh tokens rotate on use but never outlive it.
    session_ttl_s: int = Field(7 * 86400, alias="GOBLIN_SESSION_TTL_S", ge=300)
    admin_session_ttl_s: int = Field(3600, alias="GOBLIN_ADMIN_SESSION_TTL_S", ge=300)
    # How often a replica rereads the signing keys (another replica or `goblin keys rotate` may rotate).
    signing_key_refresh_s: float = Field(30.0, alias="GOBLIN_SIGNING_KEY_REFRESH_S", gt=0, le=600)

    # argon2id; the defaults are OWASP's baseline (19 MiB, 2 passes, 1 lane).
    argon2_time_cost: int = Field(2, alias="GOBLIN_ARGON2_TIME_COST", ge=1, le=20)
    argon2_memory_kib: int = Field(19456, alias="GOBLIN_ARGON2_MEMORY_KIB", ge=8192, le=1024 * 1024)
    argon2_parallelism: int = Field(1, alias="GOBLIN_ARGON2_PARALLELISM", ge=1, le=16)
    # Hashes computed at once; each holds argon2_memory_kib of RAM. 0 = the number of CPUs.
    argon2_concurrency: int = Field(0, alias="GOBLIN_ARGON2_CONCURRENCY", ge=0, le=64)
    password_min_length: int = Field(8, alias="GOBLIN_PASSWORD_MIN_LENGTH", ge=8, le=128)

    # After login_max_failures consecutive failures an account (known or not) is locked for
    # base * 2^(failures - max), never longer than login_lockout_max_s; failures older than
    # login_failure_window_s are forgotten.
    login_max_failures: int = Field(5, alias="GOBLIN_LOGIN_MAX_FAILURES", ge=1, le=100)
    login_lockout_base_s: float = Field(30.0, alias="GOBLIN_LOGIN_LOCKOUT_BASE_S", gt=0)
    login_lockout_max_s: float = Field(900.0, alias="GOBLIN_LOGIN_LOCKOUT_MAX_S", gt=0, le=86400)
    login_failure_window_s: float = Field(86400.0, alias="GOBLIN_LOGIN_FAILURE_WINDOW_S", gt=0)

    # Off: only an admin creates accounts. On: anyone may register a user in that tenant.
    self_registration: bool = Field(False, alias="GOBLIN_SELF_REGISTRATION")
    self_registration_tenant: str = Field("default", alias="GOBLIN_SELF_REGISTRATION_TENANT", min_length=1)

    webauthn_rp_id: str = Field("localhost", alias="GOBLIN_WEBAUTHN_RP_ID", min_length=1)
    webauthn_rp_name: str = Field("Goblin", alias="GOBLIN_WEBAUTHN_RP_NAME", min_length=1)
    # Comma list; empty = https://localhost:<gateway port> and https://127.0.0.1:<gateway port>.
    webauthn_origins: str = Field("", alias="GOBLIN_WEBAUTHN_ORIGINS")
    webauthn_require_user_verification: bool = Field(True, alias="GOBLIN_WEBAUTHN_REQUIRE_UV")
    gateway_port: int = Field(GATEWAY_PORT, alias="GOBLIN_GATEWAY_PORT", ge=1, le=65535)

    @field_validator("key_encryption_key")
    @classmethod
    def _kek_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            decode_key_encryption_key(value.get_secret_value())
            return value
        return None

    @model_validator(mode="after")
    def _policy(self) -> AuthPolicySettings:
        if self.production and self.key_encryption_key is None:
            raise ValueError(f"GOBLIN_AUTH_KEY_ENCRYPTION_KEY: required in production ({KEK_HINT})")
        if self.admin_session_ttl_s > self.session_ttl_s:
            raise ValueError("GOBLIN_ADMIN_SESSION_TTL_S: must not exceed GOBLIN_SESSION_TTL_S")
        if self.login_lockout_base_s > self.login_lockout_max_s:
            raise ValueError("GOBLIN_LOGIN_LOCKOUT_BASE_S: must not exceed GOBLIN_LOGIN_LOCKOUT_MAX_S")
        for origin in self.webauthn_origin_list:
            parts = urlsplit(origin)
            local = parts.hostname in ("localhost", "127.0.0.1", "::1")
            if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not local):
                raise ValueError(f"GOBLIN_WEBAUTHN_ORIGINS: {origin!r} is not an https origin")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"GOBLIN_WEBAUTHN_ORIGINS: {origin!r} is an URL, not an origin")
            # SPEC: a passkey bound to localhost, or offered over http, is a development convenience only.
            if self.production and (parts.scheme != "https" or local):
                raise ValueError(f"GOBLIN_WEBAUTHN_ORIGINS: {origin!r} is refused in production (https, public name)")
        if self.production and _is_local_name(self.webauthn_rp_id):
            raise ValueError(
                f"GOBLIN_WEBAUTHN_RP_ID: {self.webauthn_rp_id!r} is refused in production (the site's public name)"
            )
        return self

    @property
    def webauthn_origin_list(self) -> list[str]:
        """The origins a passkey ceremony may come from (what browsers put in clientDataJSON)."""
        configured = [o.strip().rstrip("/") for o in self.webauthn_origins.split(",") if o.strip()]
        if configured:
            return configured
        port = "" if self.gateway_port == 443 else f":{self.gateway_port}"
        return [f"https://localhost{port}", f"https://127.0.0.1{port}"]

    @property
    def key_encryption_key_file(self) -> Path:
        """Where development keeps its generated key-encryption key."""
        return self.goblin_home / "auth-kek.key"


class AuthSettings(AuthPolicySettings, ServiceSettings, DatabaseSettings, RedisSettings):
    grpc_port: int = Field(GRPC_PORTS["auth"], alias="GOBLIN_AUTH_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["auth"], alias="GOBLIN_AUTH_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_AUTH_PROBE_PORT", ge=0, le=65535)
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
