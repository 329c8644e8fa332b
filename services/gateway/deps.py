"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures.

Shared state: :func:`gateway_state` is the one accessor of the :class:`GatewayState` the lifespan
sets; routes take it as :data:`StateDep`.

Identity to the backends: :func:`authenticate` names the verified principal the request acts as, and
every gRPC call of the request carries a freshly signed assertion of it, signed when the call is made
(services.gateway.clients.identity; services.common.principal); RequestContext carries no identity.

Authentication: every protected route depends on :func:`current_principal`, which asks the auth
service (``Auth.Authenticate``) and keeps the answer in a local cache keyed by the SHA-256 of the
credential, for ``GOBLIN_AUTH_CACHE_TTL_S`` (30 s) or until the credential expires, whichever is
sooner. So a request with a known credential costs no round trip. A switched-off account, a revoked
key, an ended session or a changed tenant is forgotten at once by every replica: the one that took the
change publishes the ids over Redis (services.gateway.invalidation); a replica that lost that feed keeps
a principal for 1 s at most and clears its cache when it subscribes again.

Authorization: :func:`require_scopes` (403 without the scope; API key scope ``"*"`` is every scope)
and :data:`AdminDep` (role admin and scope ``admin``); :data:`OperatorDep` is AdminDep in
production and open in development. Routes that spend model capacity use
:data:`ChatDep`, which also charges one request to the tenant's requests/day quota (429
``quota_exceeded`` with Retry-After until midnight UTC once it is spent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from goblin.v1 import auth_pb2, common_pb2
from services.common import scopes
from services.gateway.caches import PrincipalCache
from services.gateway.clients.identity import act_as, sign_principal
from services.gateway.errors import ApiError
from services.gateway.ratelimit import CLIENT_IP_STATE
from services.gateway.state import GatewayState

__all__ = [
    "AdminDep",
    "ChatDep",
    "ChatReadDep",
    "KeysDep",
    "OperatorDep",
    "OptionalPrincipalDep",
    "PrincipalCache",
    "PrincipalDep",
    "StateDep",
    "gateway_state",
    "principal_context",
    "sign_principal",
]


def gateway_state(request: Request) -> GatewayState:
    """The app's shared state, set once by the lifespan (``create_app`` in main.py)."""
    return request.app.state.gateway


# A coroutine on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread
# hand-off per request for what is an attribute read.
async def _state_dependency(request: Request) -> GatewayState:
    return gateway_state(request)


StateDep = Annotated[GatewayState, Depends(_state_dependency)]


def bearer_credential(request: Request) -> str:
    """The credential of ``Authorization: Bearer ...``; 401 when there is none."""
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


async def authenticate(request: Request, state: GatewayState, credential: str) -> auth_pb2.Principal:
    """The principal for ``credential``, from the cache or the auth service; 401 if invalid."""
    principal = state.principals.get(credential)
    if principal is None:
        try:
            principal = await state.clients.auth.authenticate(credential)
        except ApiError as error:
            # RFC 6750: a refused bearer token says so in the challenge.
            if error.status_code == 401:
                error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            raise
        state.principals.put(credential, principal)
    # Every backend call this request makes carries an assertion of it, signed when the call is made.
    act_as(principal)
    # For the access log (the request envelope middleware reads the scope's state).
    request.state.principal = principal
    return principal


# The principal dependencies take the request alone (the state is on the app), so FastAPI has one
# dependency to solve per route, not a tree of them: each level costs it a solve per request.
async def current_principal(request: Request) -> auth_pb2.Principal:
    """The verified caller; 401 for a missing or invalid credential."""
    return await authenticate(request, gateway_state(request), bearer_credential(request))


async def optional_principal(request: Request) -> auth_pb2.Principal | None:
    """The verified caller if a credential was sent (401 if it is invalid), else None."""
    if not request.headers.get("authorization"):
        return None
    return await current_principal(request)


PrincipalDep = Annotated[auth_pb2.Principal, Depends(current_principal)]
OptionalPrincipalDep = Annotated[auth_pb2.Principal | None, Depends(optional_principal)]


def has_scope(principal: auth_pb2.Principal, scope: str) -> bool:
    """Whether the credential holds ``scope`` (``"*"`` holds every scope)."""
    return scopes.has_scope(principal.scopes, scope)


def client_ip(request: Request) -> str:
    """The client's address: the peer, or behind a trusted proxy (GOBLIN_TRUSTED_PROXIES) the right-most
    untrusted X-Forwarded-For hop, as the rate limiter sees it; auth locks failed sign-ins by it."""
    resolved = getattr(request.state, CLIENT_IP_STATE, None)
    if resolved is not None:  # the rate limiter's middleware resolved it for this request
        return resolved
    peer = request.client.host if request.client else ""
    return gateway_state(request).proxies.client_ip(peer, request.headers.get("x-forwarded-for"))


def principal_context(principal: auth_pb2.Principal | None, request: Request) -> common_pb2.RequestContext:
    """The RequestContext a backend gets: only what is not identity (the client's address). Who is
    asking travels as the signed principal :func:`authenticate` set for this request; ``principal`` is
    taken so routes keep saying whose call it is, and must be the one that was signed."""
    return common_pb2.RequestContext(client_ip=client_ip(request))


async def charge_request_quota(request: Request, state: GatewayState, principal: auth_pb2.Principal) -> None:
    """One request against the tenant's requests/day quota; 429 ``quota_exceeded`` once it is spent.
    Tenants without a quota cost nothing here (the principal says so)."""
    if principal.requests_per_day <= 0:
        return
    await state.clients.auth.charge_request(principal_context(principal, request))


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
            await charge_request_quota(request, gateway_state(request), principal)
        return principal

    return dependency


async def require_admin(principal: PrincipalDep) -> auth_pb2.Principal:
    """Admins only: role admin, with a credential that holds the ``admin`` scope (an admin's key
    scoped to ``chat`` cannot administer)."""
    if not scopes.is_admin(principal.role, principal.scopes):
        raise ApiError(403, "forbidden", "admin only")
    return principal


# Model capacity: chat completions, /invoke, embeddings; charged to the tenant's daily request quota.
# Called as it is by the pure-ASGI chat routes (api/asgi_routes.py), which solve no dependencies.
chat_principal = require_scopes("chat", metered=True)
ChatDep = Annotated[auth_pb2.Principal, Depends(chat_principal)]
# Reading what the chat API offers (the model list): the scope, no quota.
ChatReadDep = Annotated[auth_pb2.Principal, Depends(require_scopes("chat"))]
# Managing the account's own credentials: API keys, passkeys.
KeysDep = Annotated[auth_pb2.Principal, Depends(require_scopes("keys"))]
AdminDep = Annotated[auth_pb2.Principal, Depends(require_admin)]


async def require_operator(request: Request) -> auth_pb2.Principal | None:
    """What only operators should read (per-service health detail, the API schema, metrics): open in
    development, as it always was; admins only when ``GOBLIN_ENV=production`` (401/403 otherwise)."""
    if not gateway_state(request).settings.production:
        return None
    return await require_admin(await current_principal(request))


OperatorDep = Annotated[auth_pb2.Principal | None, Depends(require_operator)]
