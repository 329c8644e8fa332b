"""Auth routes: accounts, sign-in with passwords or passkeys, sessions, API keys, tenants, signing keys.

Only bearer tokens are offered (``Authorization: Bearer <access token or API key>``); there are no
cookie sessions, so there is no ambient credential for a cross-site request to ride on.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from services.gateway.api.schemas.auth import (
    ApiKeyCreateBody,
    ApiKeyList,
    ApiKeyOut,
    CreatedApiKeyOut,
    Deleted,
    KeyId,
    LoginBody,
    LogoutBody,
    LogoutOut,
    Me,
    PasskeyId,
    PasskeyList,
    PasskeyLoginOptionsBody,
    PasskeyOptionsOut,
    PasskeyOut,
    PasskeyVerifyBody,
    RefreshBody,
    RegisterBody,
    Revoked,
    SigningKeysOut,
    TenantCreateBody,
    TenantId,
    TenantList,
    TenantOut,
    TenantUpdateBody,
    TokenPairOut,
    UserId,
    UserOut,
    UserUpdateBody,
)
from services.gateway.deps import (
    AdminDep,
    KeysDep,
    OptionalPrincipalDep,
    PrincipalDep,
    StateDep,
    principal_context,
)

router = APIRouter(prefix="/auth", tags=["auth"])


# -- the caller ------------------------------------------------------------------------------------
@router.get("/me", response_model=Me, summary="The authenticated caller")
async def me(principal: PrincipalDep) -> Me:
    return Me.of(principal)


# -- accounts and sessions -------------------------------------------------------------------------
@router.post("/register", response_model=UserOut, status_code=201, summary="Create an account")
async def register(body: RegisterBody, request: Request, principal: OptionalPrincipalDep, state: StateDep) -> UserOut:
    """By an admin (any tenant, any role), or by anyone when GOBLIN_SELF_REGISTRATION is on."""
    user = await state.clients.auth.register(
        principal_context(principal, request),
        email=body.email,
        password=body.password,
        tenant_id=body.tenant_id,
        role=body.role,
    )
    return UserOut.of(user)


@router.post("/login", response_model=TokenPairOut, summary="Sign in with email and password")
async def login(body: LoginBody, request: Request, state: StateDep) -> TokenPairOut:
    pair = await state.clients.auth.login(principal_context(None, request), email=body.email, password=body.password)
    return TokenPairOut.of(pair)


@router.post("/refresh", response_model=TokenPairOut, summary="A new token pair for a refresh token (once)")
async def refresh(body: RefreshBody, request: Request, state: StateDep) -> TokenPairOut:
    pair = await state.clients.auth.refresh(principal_context(None, request), refresh_token=body.refresh_token)
    return TokenPairOut.of(pair)


@router.post("/logout", response_model=LogoutOut, summary="End a session")
async def logout(
    request: Request, principal: OptionalPrincipalDep, state: StateDep, body: LogoutBody | None = None
) -> LogoutOut:
    """With the refresh token in the body, or signed in with the session's access token."""
    revoked = await state.clients.auth.logout(
        principal_context(principal, request),
        refresh_token=body.refresh_token if body else "",
        session_id=principal.session_id if principal is not None else "",
    )
    # Signed in with the session's access token: auth ended that session (or the one of the refresh
    # token sent with it, usually the same). A refresh token alone names a session this gateway cannot
    # see, so its access tokens are refused by auth but may stay cached for GOBLIN_AUTH_CACHE_TTL_S.
    if revoked and principal is not None and principal.session_id:
        await state.invalidations.forget(session_id=principal.session_id)
    return LogoutOut(revoked=revoked)


# -- API keys --------------------------------------------------------------------------------------
@router.post("/api-keys", response_model=CreatedApiKeyOut, status_code=201, summary="Create an API key")
async def create_api_key(
    body: ApiKeyCreateBody, request: Request, principal: KeysDep, state: StateDep
) -> CreatedApiKeyOut:
    """The key is in this answer and nowhere else: it is stored hashed."""
    created = await state.clients.auth.create_api_key(
        principal_context(principal, request),
        name=body.name,
        scopes=body.scopes,
        expires_at=int(body.expires_at.timestamp()) if body.expires_at else 0,
        user_id=body.user_id,
        tokens_per_day=body.tokens_per_day,
    )
    return CreatedApiKeyOut(**ApiKeyOut.of(created.key).model_dump(), key=created.secret)


@router.get("/api-keys", response_model=ApiKeyList, summary="Your API keys (never their secrets)")
async def list_api_keys(request: Request, principal: KeysDep, state: StateDep) -> ApiKeyList:
    keys = await state.clients.auth.list_api_keys(principal_context(principal, request))
    return ApiKeyList(data=[ApiKeyOut.of(k) for k in keys])


@router.delete("/api-keys/{key_id}", response_model=Revoked, summary="Revoke an API key")
async def revoke_api_key(key_id: KeyId, request: Request, principal: KeysDep, state: StateDep) -> Revoked:
    """Refused by the auth service and by every gateway replica at once (invalidation.py)."""
    revoked = await state.clients.auth.revoke_api_key(principal_context(principal, request), key_id)
    await state.invalidations.forget(api_key_id=key_id)
    return Revoked(id=key_id, revoked=revoked)


# -- passkeys --------------------------------------------------------------------------------------
@router.post(
    "/passkeys/register/options",
    response_model=PasskeyOptionsOut,
    summary="Start adding a passkey to your account",
)
async def passkey_register_options(request: Request, principal: KeysDep, state: StateDep) -> PasskeyOptionsOut:
    options = await state.clients.auth.passkey_registration_options(principal_context(principal, request))
    return PasskeyOptionsOut.of(options)


@router.post("/passkeys/register/verify", response_model=PasskeyOut, status_code=201, summary="Finish adding a passkey")
async def passkey_register_verify(
    body: PasskeyVerifyBody, request: Request, principal: KeysDep, state: StateDep
) -> PasskeyOut:
    passkey = await state.clients.auth.passkey_registration_verify(
        principal_context(principal, request),
        challenge_id=body.challenge_id,
        credential_json=json.dumps(body.credential),
        name=body.name,
    )
    return PasskeyOut.of(passkey)


@router.post("/passkeys/login/options", response_model=PasskeyOptionsOut, summary="Start signing in with a passkey")
async def passkey_login_options(
    request: Request, state: StateDep, body: PasskeyLoginOptionsBody | None = None
) -> PasskeyOptionsOut:
    options = await state.clients.auth.passkey_login_options(
        principal_context(None, request), email=body.email if body else ""
    )
    return PasskeyOptionsOut.of(options)


@router.post("/passkeys/login/verify", response_model=TokenPairOut, summary="Finish signing in with a passkey")
async def passkey_login_verify(body: PasskeyVerifyBody, request: Request, state: StateDep) -> TokenPairOut:
    pair = await state.clients.auth.passkey_login_verify(
        principal_context(None, request),
        challenge_id=body.challenge_id,
        credential_json=json.dumps(body.credential),
    )
    return TokenPairOut.of(pair)


@router.get("/passkeys", response_model=PasskeyList, summary="Your passkeys")
async def list_passkeys(request: Request, principal: KeysDep, state: StateDep) -> PasskeyList:
    passkeys = await state.clients.auth.list_passkeys(principal_context(principal, request))
    return PasskeyList(data=[PasskeyOut.of(p) for p in passkeys])


@router.delete("/passkeys/{passkey_id}", response_model=Deleted, summary="Remove a passkey")
async def delete_passkey(passkey_id: PasskeyId, request: Request, principal: KeysDep, state: StateDep) -> Deleted:
    deleted = await state.clients.auth.delete_passkey(principal_context(principal, request), passkey_id)
    return Deleted(id=passkey_id, deleted=deleted)


# -- administration --------------------------------------------------------------------------------
@router.get("/tenants", response_model=TenantList, summary="Tenants and their quotas (admin)")
async def list_tenants(request: Request, principal: AdminDep, state: StateDep) -> TenantList:
    tenants = await state.clients.auth.list_tenants(principal_context(principal, request))
    return TenantList(data=[TenantOut.of(t) for t in tenants])


@router.post("/tenants", response_model=TenantOut, status_code=201, summary="Create a tenant (admin)")
async def create_tenant(body: TenantCreateBody, request: Request, principal: AdminDep, state: StateDep) -> TenantOut:
    tenant = await state.clients.auth.create_tenant(
        principal_context(principal, request),
        tenant_id=body.id,
        name=body.name,
        requests_per_day=body.requests_per_day,
        tokens_per_day=body.tokens_per_day,
        daily_budget_usd=body.daily_budget_usd,
    )
    return TenantOut.of(tenant)


@router.patch("/tenants/{tenant_id}", response_model=TenantOut, summary="Change a tenant's name or quotas (admin)")
async def update_tenant(
    tenant_id: TenantId, body: TenantUpdateBody, request: Request, principal: AdminDep, state: StateDep
) -> TenantOut:
    """Quota and budget changes (0 = unlimited) apply at once on every gateway replica: each forgets
    the tenant's cached principals (invalidation.py)."""
    tenant = await state.clients.auth.update_tenant(
        principal_context(principal, request), tenant_id, body.model_dump(exclude_none=True)
    )
    await state.invalidations.forget(tenant_id=tenant_id)
    return TenantOut.of(tenant)


@router.patch(
    "/users/{user_id}", response_model=UserOut, summary="Switch an account off or on, or change its role (admin)"
)
async def update_user(
    user_id: UserId, body: UserUpdateBody, request: Request, principal: AdminDep, state: StateDep
) -> UserOut:
    """Switching an account off ends its sessions and stops its API keys at once on every gateway
    replica: each forgets the account's cached principals (invalidation.py). A role change applies
    the same way."""
    user = await state.clients.auth.update_user(
        principal_context(principal, request), user_id, body.model_dump(exclude_none=True)
    )
    await state.invalidations.forget(user_id=user_id)
    return UserOut.of(user)


@router.post("/signing-keys/rotate", response_model=SigningKeysOut, summary="Rotate the token-signing keys (admin)")
async def rotate_signing_keys(request: Request, principal: AdminDep, state: StateDep) -> SigningKeysOut:
    """The standby key starts signing, the current one retires (still verifying until its tokens
    expire) and a new standby is published. Tokens already issued stay valid."""
    jwks = await state.clients.auth.rotate_signing_keys(principal_context(principal, request))
    state.jwks.forget()
    return SigningKeysOut.of(jwks)
