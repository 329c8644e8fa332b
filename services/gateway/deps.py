"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures.

Authentication: every protected route depends on :func:`current_principal`, which asks the auth
service (``Auth.Authenticate``) and keeps the answer in a local cache keyed by the SHA-256 of the
credential, for ``GOBLIN_AUTH_CACHE_TTL_S`` (30 s) or until the credential expires, whichever is
sooner. So a request with a known credential costs no round trip, and the price is stated: a revoked
API key, or the access token of a session that signed out elsewhere, is still accepted by a gateway
replica that cached it for at most that TTL. Sign-out and key revocation through this gateway
evict at once.

Authorization: :func:`require_scopes` (403 without the scope; API key scope ``"*"`` is every scope)
and :data:`AdminDep` (role admin and scope ``admin``). Routes that spend model capacity use
:data:`ChatDep`, which also charges one request to the tenant's requests/day quota (429
``quota_exceeded`` with Retry-After until midnight UTC once it is spent).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import grpc
from cachetools import TLRUCache
from fastapi import Depends, Request

from goblin.v1 import auth_pb2, common_pb2
from services.common.context import current_correlation_id
from services.gateway.clients import Backends
from services.gateway.config import GatewaySettings
from services.gateway.errors import ApiError, api_error_from_grpc

AUTH_TIMEOUT_S = 5.0
PRINCIPAL_CACHE_SIZE = 10_000

ResponseT = TypeVar("ResponseT")


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_backends(request: Request) -> Backends:
    return request.app.state.backends


# Dependencies are coroutines on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
# a thread hand-off per request for what is an attribute read.
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]


class PrincipalCache:
    """Verified principals by SHA-256 of their credential (the credential itself is never kept),
    each for ``ttl_s`` or until the credential expires, whichever comes first."""

    def __init__(self, ttl_s: float, maxsize: int = PRINCIPAL_CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self._entries: TLRUCache[bytes, auth_pb2.Principal] = TLRUCache(maxsize, ttu=self._expires)

    def _expires(self, _key: bytes, principal: auth_pb2.Principal, now: float) -> float:
        ttl = self.ttl_s
        if principal.expires_at:
            ttl = min(ttl, principal.expires_at - time.time())
        return now + ttl

    @staticmethod
    def key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode()).digest()

    def get(self, credential: str) -> auth_pb2.Principal | None:
        return self._entries.get(self.key(credential))

    def put(self, credential: str, principal: auth_pb2.Principal) -> None:
        if self.ttl_s <= 0 or (principal.expires_at and principal.expires_at <= time.time()):
            return
        self._entries[self.key(credential)] = principal

    def evict(self, credential: str) -> None:
        self._entries.pop(self.key(credential), None)

    def forget(self, *, api_key_id: str = "", session_id: str = "", tenant_id: str = "") -> None:
        """Drop every cached principal of one API key or one session (revoked through this replica), or
        of one tenant (its quotas and budget, which principals carry, changed through this replica)."""
        stale = [
            key
            for key, principal in list(self._entries.items())
            if (api_key_id and principal.api_key_id == api_key_id)
            or (session_id and principal.session_id == session_id)
            or (tenant_id and principal.tenant_id == tenant_id)
        ]
        for key in stale:
            self._entries.pop(key, None)


def principal_cache(request: Request) -> PrincipalCache:
    state = request.app.state
    cache = getattr(state, "principal_cache", None)
    if cache is None:
        cache = state.principal_cache = PrincipalCache(state.settings.auth_cache_ttl_s)
    return cache


def bearer_credential(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not credential.strip():
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer credential: send 'Authorization: Bearer <API key or access token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credential.strip()


async def authenticate(request: Request, backends: Backends, credential: str) -> auth_pb2.Principal:
    """The principal for ``credential``, from the cache or the auth service; 401 if invalid."""
    cache = principal_cache(request)
    principal = cache.get(credential)
    if principal is None:
        try:
            principal = await backends.auth.Authenticate(
                auth_pb2.AuthenticateRequest(credential=credential, correlation_id=current_correlation_id()),
                timeout=AUTH_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            error = api_error_from_grpc(exc, service="auth")
            if error.status_code == 401:
                error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            raise error from None
        cache.put(credential, principal)
    request.state.principal = principal
    return principal


async def call_auth(rpc: Callable[..., Awaitable[ResponseT]], request: Any) -> ResponseT:
    """One Auth RPC; its failure as the gateway's JSON error (401, 403, 409, 429 with Retry-After...)."""
    try:
        return await rpc(request, timeout=AUTH_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        raise api_error_from_grpc(exc, service="auth") from None


# The principal dependencies take the request alone (the backends are on app.state), so FastAPI has one
# dependency to solve per route, not a tree of them: each level costs it a solve per request.
async def current_principal(request: Request) -> auth_pb2.Principal:
    """The verified caller; 401 for a missing or invalid credential."""
    return await authenticate(request, request.app.state.backends, bearer_credential(request))


async def optional_principal(request: Request) -> auth_pb2.Principal | None:
    """The verified caller if a credential was sent (401 if it is invalid), else None."""
    if not request.headers.get("authorization"):
        return None
    return await current_principal(request)


PrincipalDep = Annotated[auth_pb2.Principal, Depends(current_principal)]
OptionalPrincipalDep = Annotated[auth_pb2.Principal | None, Depends(optional_principal)]


def has_scope(principal: auth_pb2.Principal, scope: str) -> bool:
    return "*" in principal.scopes or scope in principal.scopes


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def principal_context(principal: auth_pb2.Principal | None, request: Request) -> common_pb2.RequestContext:
    """The RequestContext a backend gets: who is asking, as verified here."""
    context = common_pb2.RequestContext(correlation_id=current_correlation_id(), client_ip=client_ip(request))
    if principal is not None:
        context.user_id = principal.user_id
        context.tenant_id = principal.tenant_id
        context.api_key_id = principal.api_key_id
        context.scopes.extend(principal.scopes)
        # The router enforces these budgets from the context: it never reads auth's tables.
        if principal.HasField("tenant_daily_budget_usd"):
            context.tenant_daily_budget_usd = principal.tenant_daily_budget_usd
        if principal.HasField("key_tokens_per_day"):
            context.key_tokens_per_day = principal.key_tokens_per_day
    return context


async def charge_request_quota(request: Request, backends: Backends, principal: auth_pb2.Principal) -> None:
    """One request against the tenant's requests/day quota; 429 ``quota_exceeded`` once it is spent.
    Tenants without a quota cost nothing here (the principal says so)."""
    if principal.requests_per_day <= 0:
        return
    try:
        await backends.auth.ChargeRequest(
            auth_pb2.ChargeRequestRequest(context=principal_context(principal, request)),
            timeout=AUTH_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        raise api_error_from_grpc(exc, service="auth") from None


def require_scopes(*scopes: str, metered: bool = False) -> Callable[[Request], Awaitable[auth_pb2.Principal]]:
    """A dependency: the caller, if their credential holds every one of ``scopes`` (else 403);
    ``metered`` also charges the request to the tenant's requests/day quota."""

    async def dependency(request: Request) -> auth_pb2.Principal:
        principal = await current_principal(request)
        missing = [s for s in scopes if not has_scope(principal, s)]
        if missing:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this credential lacks the scope(s): {', '.join(missing)}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}"'},
            )
        if metered:
            await charge_request_quota(request, request.app.state.backends, principal)
        return principal

    return dependency


async def require_admin(principal: PrincipalDep) -> auth_pb2.Principal:
    """Admins only: role admin, with a credential that holds the ``admin`` scope (an admin's key
    scoped to ``chat`` cannot administer)."""
    if principal.role != "admin" or not has_scope(principal, "admin"):
        raise ApiError(403, "forbidden", "admin only")
    return principal


# Model capacity: chat completions, /invoke, embeddings; charged to the tenant's daily request quota.
ChatDep = Annotated[auth_pb2.Principal, Depends(require_scopes("chat", metered=True))]
# Reading what the chat API offers (the model list): the scope, no quota.
ChatReadDep = Annotated[auth_pb2.Principal, Depends(require_scopes("chat"))]
# Managing the account's own credentials: API keys, passkeys.
KeysDep = Annotated[auth_pb2.Principal, Depends(require_scopes("keys"))]
AdminDep = Annotated[auth_pb2.Principal, Depends(require_admin)]
