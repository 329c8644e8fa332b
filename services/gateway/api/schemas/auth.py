"""Bodies and answers of the ``/auth`` routes, and the path parameters they take.

Each answer model builds itself from the auth service's message (``.of``), in one copy.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from goblin.v1 import auth_pb2


def _text(value: str) -> str:
    """JSON may carry what no credential store can: lone surrogates (not UTF-8) and NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    return value


Text = Annotated[str, AfterValidator(_text)]
# The columns' ranges (INTEGER, BIGINT, NUMERIC(12, 4)): larger values are a client error, not a 500.
RequestsPerDay = Annotated[int, Field(ge=0, le=2**31 - 1)]
TokensPerDay = Annotated[int, Field(ge=0, le=2**63 - 1)]
BudgetUsd = Annotated[float, Field(ge=0, le=99_999_999)]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the id from the list, not the key")]
PasskeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
TenantId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
UserId = Annotated[str, Path(pattern=r"^[0-9a-f-]{1,64}$", description="the account id (user_id in GET /auth/me)")]


def _when(unix: int) -> int | None:
    return unix or None


class Me(BaseModel):
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    api_key_id: str | None = None
    session_id: str | None = None
    expires_at: int | None = None

    @classmethod
    def of(cls, principal: auth_pb2.Principal) -> Me:
        return cls(
            user_id=principal.user_id,
            tenant_id=principal.tenant_id,
            email=principal.email,
            role=principal.role,
            scopes=list(principal.scopes),
            api_key_id=principal.api_key_id or None,
            session_id=principal.session_id or None,
            expires_at=principal.expires_at or None,
        )


class UserOut(BaseModel):
    id: str
    email: str
    role: str
    tenant_id: str
    created: int
    active: bool

    @classmethod
    def of(cls, user: auth_pb2.User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            role=user.role,
            tenant_id=user.tenant_id,
            created=user.created,
            active=user.active,
        )


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_expires_in: int
    user: UserOut

    @classmethod
    def of(cls, pair: auth_pb2.TokenPair) -> TokenPairOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type or "Bearer",
            expires_in=pair.expires_in,
            refresh_expires_in=pair.refresh_expires_in,
            user=UserOut.of(pair.user),
        )


class RegisterBody(BaseModel):
    email: Text = Field(max_length=320)
    password: Text = Field(max_length=1024)
    tenant_id: Text = Field("", max_length=63, description="admin only; default: the admin's tenant")
    role: Literal["user", "admin"] = Field("user", description="admin only for 'admin'")


class LoginBody(BaseModel):
    email: Text = Field(max_length=320)
    password: Text = Field(max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: Text = Field(max_length=256)


class LogoutBody(BaseModel):
    refresh_token: Text = Field("", max_length=256)


class LogoutOut(BaseModel):
    revoked: bool


class ApiKeyCreateBody(BaseModel):
    name: Text = Field(max_length=100)
    scopes: list[Annotated[Text, Field(max_length=64)]] = Field(default_factory=lambda: ["chat"], max_length=32)
    expires_at: datetime | None = Field(None, description="ISO 8601 or unix seconds; none = never")
    user_id: Text = Field("", max_length=64, description="admin only: a key for another user")
    tokens_per_day: TokensPerDay = Field(
        0, description="a token budget for this key (0 = none); the router enforces it"
    )


class ApiKeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    scopes: list[str]
    created: int
    expires_at: int | None
    last_used: int | None
    revoked: bool
    user_id: str
    tenant_id: str
    tokens_per_day: int | None

    @classmethod
    def of(cls, key: auth_pb2.ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created=key.created,
            expires_at=_when(key.expires_at),
            last_used=_when(key.last_used),
            revoked=key.revoked,
            user_id=key.user_id,
            tenant_id=key.tenant_id,
            tokens_per_day=key.tokens_per_day or None,
        )


class CreatedApiKeyOut(ApiKeyOut):
    key: str = Field(description="the whole key: shown now and never again")


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyOut]


class Revoked(BaseModel):
    id: str
    revoked: bool


class PasskeyOptionsOut(BaseModel):
    challenge_id: str = Field(description="send it back with the credential; valid once, for 5 minutes")
    options: dict[str, Any] = Field(description="for navigator.credentials.create()/get() (publicKey)")

    @classmethod
    def of(cls, options: auth_pb2.PasskeyOptions) -> PasskeyOptionsOut:
        return cls(challenge_id=options.challenge_id, options=json.loads(options.options_json))


class PasskeyLoginOptionsBody(BaseModel):
    email: Text = Field("", max_length=320, description="optional: without it, discoverable passkeys")


class PasskeyVerifyBody(BaseModel):
    challenge_id: Text = Field(max_length=128)
    credential: dict[str, Any] = Field(description="the browser's PublicKeyCredential, as JSON")
    name: Text = Field("", max_length=100, description="registration: a label for the passkey")


class PasskeyOut(BaseModel):
    id: str
    name: str
    created: int
    last_used: int | None
    sign_count: int

    @classmethod
    def of(cls, passkey: auth_pb2.Passkey) -> PasskeyOut:
        return cls(
            id=passkey.id,
            name=passkey.name,
            created=passkey.created,
            last_used=_when(passkey.last_used),
            sign_count=passkey.sign_count,
        )


class PasskeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PasskeyOut]


class Deleted(BaseModel):
    id: str
    deleted: bool


class TenantOut(BaseModel):
    id: str
    name: str
    requests_per_day: int | None
    tokens_per_day: int | None
    daily_budget_usd: float | None
    created: int

    @classmethod
    def of(cls, tenant: auth_pb2.Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            name=tenant.name,
            requests_per_day=tenant.requests_per_day or None,
            tokens_per_day=tenant.tokens_per_day or None,
            daily_budget_usd=tenant.daily_budget_usd or None,
            created=tenant.created,
        )


class TenantCreateBody(BaseModel):
    id: Text = Field("", max_length=63, description="default: derived from the name")
    name: Text = Field(max_length=100)
    requests_per_day: RequestsPerDay = Field(0, description="0 = unlimited")
    tokens_per_day: TokensPerDay = Field(0, description="0 = unlimited; the router enforces it")
    daily_budget_usd: BudgetUsd = Field(0.0, description="0 = unlimited; the router enforces it")


class TenantUpdateBody(BaseModel):
    name: Text | None = Field(None, max_length=100)
    requests_per_day: RequestsPerDay | None = None
    tokens_per_day: TokensPerDay | None = None
    daily_budget_usd: BudgetUsd | None = None


class UserUpdateBody(BaseModel):
    """What an admin may change on an account; at least one field."""

    model_config = ConfigDict(extra="forbid")

    active: StrictBool | None = None
    role: str | None = Field(None, max_length=32)

    @model_validator(mode="after")
    def _some_change(self) -> UserUpdateBody:
        if self.active is None and self.role is None:
            raise ValueError("name a change: active and/or role")
        return self


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantOut]


class SigningKeysOut(BaseModel):
    current_kid: str
    standby_kid: str
    keys: list[dict[str, Any]]

    @classmethod
    def of(cls, jwks: auth_pb2.Jwks) -> SigningKeysOut:
        return cls(current_kid=jwks.current_kid, standby_kid=jwks.standby_kid, keys=json.loads(jwks.json)["keys"])
