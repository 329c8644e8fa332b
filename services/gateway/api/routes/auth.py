"""Auth routes: accounts, sign-in with passwords or passkeys, sessions, API keys, tenants, signing keys.

Only bearer tokens are offered (``Authorization: Bearer <access token or API key>``); there are no
cookie sessions, so there is no ambient credential for a cross-site request to ride on.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator, BaseModel, Field

from goblin.v1 import auth_pb2
from services.gateway.api.routes.jwks import forget_jwks
from services.gateway.deps import (
    AdminDep,
    BackendsDep,
    KeysDep,
    OptionalPrincipalDep,
    PrincipalDep,
    call_auth,
    principal_cache,
    principal_context,
)

router = APIRouter(prefix="/auth", tags=["auth"])


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


def _when(unix: int) -> int | None:
    return unix or None


# -- bodies and answers ---------------------------------------------------------------------------
class Me(BaseModel):
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    api_key_id: str | None = None
    session_id: str | None = None
    expires_at: int | None = None


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


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantOut]


class SigningKeysOut(BaseModel):
    current_kid: str
    standby_kid: str
    keys: list[dict[str, Any]]


# -- the caller ------------------------------------------------------------------------------------
@router.get("/me", response_model=Me, summary="The authenticated caller")
async def me(principal: PrincipalDep) -> Me:
    return Me(
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        email=principal.email,
        role=principal.role,
        scopes=list(principal.scopes),
        api_key_id=principal.api_key_id or None,
        session_id=principal.session_id or None,
        expires_at=principal.expires_at or None,
    )


# -- accounts and sessions -------------------------------------------------------------------------
@router.post("/register", response_model=UserOut, status_code=201, summary="Create an account")
async def register(
    body: RegisterBody, request: Request, principal: OptionalPrincipalDep, backends: BackendsDep
) -> UserOut:
    """By an admin (any tenant, any role), or by anyone when GOBLIN_SELF_REGISTRATION is on."""
    user = await call_auth(
        backends.auth.Register,
        auth_pb2.RegisterRequest(
            context=principal_context(principal, request),
            email=body.email,
            password=body.password,
            tenant_id=body.tenant_id,
            role=body.role,
        ),
    )
    return UserOut.of(user)


@router.post("/login", response_model=TokenPairOut, summary="Sign in with email and password")
async def login(body: LoginBody, request: Request, backends: BackendsDep) -> TokenPairOut:
    pair = await call_auth(
        backends.auth.Login,
        auth_pb2.LoginRequest(context=principal_context(None, request), email=body.email, password=body.password),
    )
    return TokenPairOut.of(pair)


@router.post("/refresh", response_model=TokenPairOut, summary="A new token pair for a refresh token (once)")
async def refresh(body: RefreshBody, request: Request, backends: BackendsDep) -> TokenPairOut:
    pair = await call_auth(
        backends.auth.Refresh,
        auth_pb2.RefreshRequest(context=principal_context(None, request), refresh_token=body.refresh_token),
    )
    return TokenPairOut.of(pair)


@router.post("/logout", response_model=LogoutOut, summary="End a session")
async def logout(
    request: Request, principal: OptionalPrincipalDep, backends: BackendsDep, body: LogoutBody | None = None
) -> LogoutOut:
    """With the refresh token in the body, or signed in with the session's access token."""
    refresh_token = body.refresh_token if body else ""
    session_id = principal.session_id if principal is not None else ""
    reply = await call_auth(
        backends.auth.Logout,
        auth_pb2.LogoutRequest(
            context=principal_context(principal, request), refresh_token=refresh_token, session_id=session_id
        ),
    )
    if principal is not None and principal.session_id:
        principal_cache(request).forget(session_id=principal.session_id)
    return LogoutOut(revoked=reply.revoked)


# -- API keys --------------------------------------------------------------------------------------
@router.post("/api-keys", response_model=CreatedApiKeyOut, status_code=201, summary="Create an API key")
async def create_api_key(
    body: ApiKeyCreateBody, request: Request, principal: KeysDep, backends: BackendsDep
) -> CreatedApiKeyOut:
    """The key is in this answer and nowhere else: it is stored hashed."""
    created = await call_auth(
        backends.auth.CreateApiKey,
        auth_pb2.CreateApiKeyRequest(
            context=principal_context(principal, request),
            name=body.name,
            scopes=body.scopes,
            expires_at=int(body.expires_at.timestamp()) if body.expires_at else 0,
            user_id=body.user_id,
            tokens_per_day=body.tokens_per_day,
        ),
    )
    return CreatedApiKeyOut(**ApiKeyOut.of(created.key).model_dump(), key=created.secret)


@router.get("/api-keys", response_model=ApiKeyList, summary="Your API keys (never their secrets)")
async def list_api_keys(request: Request, principal: KeysDep, backends: BackendsDep) -> ApiKeyList:
    reply = await call_auth(
        backends.auth.ListApiKeys, auth_pb2.ListApiKeysRequest(context=principal_context(principal, request))
    )
    return ApiKeyList(data=[ApiKeyOut.of(k) for k in reply.keys])


@router.delete("/api-keys/{key_id}", response_model=Revoked, summary="Revoke an API key")
async def revoke_api_key(key_id: KeyId, request: Request, principal: KeysDep, backends: BackendsDep) -> Revoked:
    """Refused by the auth service and by this gateway at once; another gateway replica that cached
    the key accepts it for at most GOBLIN_AUTH_CACHE_TTL_S more."""
    reply = await call_auth(
        backends.auth.RevokeApiKey,
        auth_pb2.RevokeApiKeyRequest(context=principal_context(principal, request), key_id=key_id),
    )
    principal_cache(request).forget(api_key_id=key_id)
    return Revoked(id=key_id, revoked=reply.revoked)


# -- passkeys --------------------------------------------------------------------------------------
@router.post(
    "/passkeys/register/options",
    response_model=PasskeyOptionsOut,
    summary="Start adding a passkey to your account",
)
async def passkey_register_options(request: Request, principal: KeysDep, backends: BackendsDep) -> PasskeyOptionsOut:
    options = await call_auth(
        backends.auth.PasskeyRegistrationOptions,
        auth_pb2.PasskeyOptionsRequest(context=principal_context(principal, request)),
    )
    return PasskeyOptionsOut.of(options)


@router.post("/passkeys/register/verify", response_model=PasskeyOut, status_code=201, summary="Finish adding a passkey")
async def passkey_register_verify(
    body: PasskeyVerifyBody, request: Request, principal: KeysDep, backends: BackendsDep
) -> PasskeyOut:
    passkey = await call_auth(
        backends.auth.PasskeyRegistrationVerify,
        auth_pb2.PasskeyVerifyRequest(
            context=principal_context(principal, request),
            challenge_id=body.challenge_id,
            credential_json=json.dumps(body.credential),
            name=body.name,
        ),
    )
    return PasskeyOut.of(passkey)


@router.post("/passkeys/login/options", response_model=PasskeyOptionsOut, summary="Start signing in with a passkey")
async def passkey_login_options(
    request: Request, backends: BackendsDep, body: PasskeyLoginOptionsBody | None = None
) -> PasskeyOptionsOut:
    options = await call_auth(
        backends.auth.PasskeyLoginOptions,
        auth_pb2.PasskeyOptionsRequest(context=principal_context(None, request), email=body.email if body else ""),
    )
    return PasskeyOptionsOut.of(options)


@router.post("/passkeys/login/verify", response_model=TokenPairOut, summary="Finish signing in with a passkey")
async def passkey_login_verify(body: PasskeyVerifyBody, request: Request, backends: BackendsDep) -> TokenPairOut:
    pair = await call_auth(
        backends.auth.PasskeyLoginVerify,
        auth_pb2.PasskeyVerifyRequest(
            context=principal_context(None, request),
            challenge_id=body.challenge_id,
            credential_json=json.dumps(body.credential),
        ),
    )
    return TokenPairOut.of(pair)


@router.get("/passkeys", response_model=PasskeyList, summary="Your passkeys")
async def list_passkeys(request: Request, principal: KeysDep, backends: BackendsDep) -> PasskeyList:
    reply = await call_auth(
        backends.auth.ListPasskeys,
        auth_pb2.ListPasskeysRequest(context=principal_context(principal, request)),
    )
    return PasskeyList(data=[PasskeyOut.of(p) for p in reply.passkeys])


@router.delete("/passkeys/{passkey_id}", response_model=Deleted, summary="Remove a passkey")
async def delete_passkey(passkey_id: PasskeyId, request: Request, principal: KeysDep, backends: BackendsDep) -> Deleted:
    reply = await call_auth(
        backends.auth.DeletePasskey,
        auth_pb2.DeletePasskeyRequest(context=principal_context(principal, request), passkey_id=passkey_id),
    )
    return Deleted(id=passkey_id, deleted=reply.deleted)


# -- administration --------------------------------------------------------------------------------
@router.get("/tenants", response_model=TenantList, summary="Tenants and their quotas (admin)")
async def list_tenants(request: Request, principal: AdminDep, backends: BackendsDep) -> TenantList:
    reply = await call_auth(
        backends.auth.ListTenants, auth_pb2.ListTenantsRequest(context=principal_context(principal, request))
    )
    return TenantList(data=[TenantOut.of(t) for t in reply.tenants])


@router.post("/tenants", response_model=TenantOut, status_code=201, summary="Create a tenant (admin)")
async def create_tenant(
    body: TenantCreateBody, request: Request, principal: AdminDep, backends: BackendsDep
) -> TenantOut:
    tenant = await call_auth(
        backends.auth.CreateTenant,
        auth_pb2.CreateTenantRequest(
            context=principal_context(principal, request),
            id=body.id,
            name=body.name,
            requests_per_day=body.requests_per_day,
            tokens_per_day=body.tokens_per_day,
            daily_budget_usd=body.daily_budget_usd,
        ),
    )
    return TenantOut.of(tenant)


@router.patch("/tenants/{tenant_id}", response_model=TenantOut, summary="Change a tenant's name or quotas (admin)")
async def update_tenant(
    tenant_id: TenantId, body: TenantUpdateBody, request: Request, principal: AdminDep, backends: BackendsDep
) -> TenantOut:
    """Quota and budget changes apply at once through this replica, within GOBLIN_AUTH_CACHE_TTL_S
    (30 s) on the others, which cache verified principals (0 = unlimited)."""
    update = auth_pb2.UpdateTenantRequest(context=principal_context(principal, request), id=tenant_id)
    for name, value in body.model_dump(exclude_none=True).items():
        setattr(update, name, value)
    tenant = await call_auth(backends.auth.UpdateTenant, update)
    principal_cache(request).forget(tenant_id=tenant_id)
    return TenantOut.of(tenant)


@router.post("/signing-keys/rotate", response_model=SigningKeysOut, summary="Rotate the token-signing keys (admin)")
async def rotate_signing_keys(request: Request, principal: AdminDep, backends: BackendsDep) -> SigningKeysOut:
    """The standby key starts signing, the current one retires (still verifying until its tokens
    expire) and a new standby is published. Tokens already issued stay valid."""
    jwks = await call_auth(
        backends.auth.RotateSigningKeys,
        auth_pb2.RotateSigningKeysRequest(context=principal_context(principal, request)),
    )
    forget_jwks(request.app)
    return SigningKeysOut(
        current_kid=jwks.current_kid, standby_kid=jwks.standby_kid, keys=json.loads(jwks.json)["keys"]
    )
