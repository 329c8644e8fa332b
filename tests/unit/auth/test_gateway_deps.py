"""The gateway's side of auth: the principal cache, scope and admin checks, the request quota charge,
over a real gRPC channel to a scripted auth servicer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from goblin.v1 import auth_pb2, auth_pb2_grpc
from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY
from services.common.principal import load_signer
from services.gateway.config import GatewaySettings
from services.gateway.deps import (
    AdminDep,
    ChatDep,
    ChatReadDep,
    PrincipalCache,
    PrincipalDep,
    principal_context,
    sign_principal,
)
from services.gateway.errors import install_error_handlers
from services.gateway.ratelimit import TrustedProxies
from services.gateway.state import GatewayState
from tests.unit.gateway.backends import abort, grpc_server, scripted_tls_settings


class FakeAuth(auth_pb2_grpc.AuthServicer):
    """Auth.Authenticate and Auth.ChargeRequest, counting calls."""

    def __init__(self, principals: dict[str, auth_pb2.Principal], quota: int = 0) -> None:
        self.principals = principals
        self.quota = quota
        self.authenticate_calls = 0
        self.charged = 0

    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.Principal:
        self.authenticate_calls += 1
        if request.credential not in self.principals:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid credential")
        return self.principals[request.credential]

    async def ChargeRequest(self, request: auth_pb2.ChargeRequestRequest, context: Any) -> auth_pb2.QuotaStatus:
        self.charged += 1
        if self.charged > self.quota:
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "quota used up",
                ((ERROR_CODE_KEY, "quota_exceeded"), (RETRY_AFTER_KEY, "3600.000")),
            )
        return auth_pb2.QuotaStatus(used=self.charged, limit=self.quota)


def principal(**fields: Any) -> auth_pb2.Principal:
    base: dict[str, Any] = {"user_id": "u1", "tenant_id": "t1", "role": "user", "scopes": ["*"]}
    return auth_pb2.Principal(**{**base, **fields})


@asynccontextmanager
async def gateway(auth: FakeAuth, ttl_s: float = 30.0, *, auth_addr: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """A small app with the gateway's dependencies and its real state, its auth client dialling ``auth``
    (or ``auth_addr``, where nothing listens)."""
    async with grpc_server(auth=auth) as address:
        settings = GatewaySettings(
            database_url="postgresql://127.0.0.1:1/unused",
            redis_url="redis://127.0.0.1:1/0",
            auth_cache_ttl_s=ttl_s,
            auth_addr=auth_addr or address,
            **scripted_tls_settings(),
        )
        app = FastAPI()
        install_error_handlers(app)
        state = app.state.gateway = GatewayState.build(settings)

        @app.get("/me")
        async def me(caller: PrincipalDep) -> dict[str, str]:
            return {"user_id": caller.user_id}

        @app.post("/chat")
        async def chat(caller: ChatDep) -> dict[str, str]:
            return {"ok": caller.user_id}

        @app.get("/models")
        async def models(caller: ChatReadDep) -> dict[str, str]:
            return {"ok": caller.user_id}

        @app.get("/admin")
        async def admin(caller: AdminDep) -> dict[str, str]:
            return {"ok": caller.user_id}

        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                yield client
        finally:
            await state.clients.close()


async def get(client: httpx.AsyncClient, path: str, credential: str, method: str = "GET") -> httpx.Response:
    return await client.request(method, path, headers={"Authorization": f"Bearer {credential}"})


async def test_a_verified_credential_is_asked_for_once_within_the_ttl() -> None:
    auth = FakeAuth({"k1": principal()})
    async with gateway(auth) as client:
        assert [(await get(client, "/me", "k1")).status_code for _ in range(5)] == [200] * 5
        assert auth.authenticate_calls == 1
        refused = await get(client, "/me", "nope")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert (await get(client, "/me", "nope")).status_code == 401
        assert auth.authenticate_calls == 3, "refusals are not cached"
        missing = await client.get("/me")
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"


async def test_ttl_zero_turns_the_cache_off() -> None:
    auth = FakeAuth({"k1": principal()})
    async with gateway(auth, ttl_s=0) as client:
        for _ in range(3):
            await get(client, "/me", "k1")
    assert auth.authenticate_calls == 3


async def test_auth_down_is_a_503_that_names_the_service() -> None:
    async with gateway(FakeAuth({"k1": principal()}), auth_addr="127.0.0.1:1") as client:
        reply = await get(client, "/me", "k1")
    assert reply.status_code == 503
    assert reply.json()["error"] == "service_unavailable" and reply.json()["message"] == "auth is unavailable"


def test_entries_end_with_the_credential_and_keep_no_secret() -> None:
    cache = PrincipalCache(ttl_s=30)
    cache.put("secret-a", principal(expires_at=int(time.time()) + 2))
    cache.put("secret-b", principal(expires_at=int(time.time()) - 1))
    cache.put("secret-c", principal(api_key_id="key-c"))
    cache.put("secret-d", principal(session_id="s-d"))
    assert cache.get("secret-a") is not None and cache.get("secret-b") is None
    assert all(isinstance(k, bytes) and b"secret" not in k for k in cache._entries)
    time.sleep(2.1)
    assert cache.get("secret-a") is None, "an access token leaves the cache when it expires"
    cache.forget(api_key_id="key-c")
    cache.forget(session_id="s-d")
    assert cache.get("secret-c") is None and cache.get("secret-d") is None


@pytest.mark.parametrize(
    ("scopes", "role", "expected"),
    [
        (["*"], "user", {"/chat": 200, "/models": 200, "/admin": 403}),
        (["chat"], "user", {"/chat": 200, "/models": 200, "/admin": 403}),
        (["keys"], "user", {"/chat": 403, "/models": 403, "/admin": 403}),
        (["*"], "admin", {"/chat": 200, "/models": 200, "/admin": 200}),
        (["chat"], "admin", {"/chat": 200, "/models": 200, "/admin": 403}),
        (["admin"], "admin", {"/chat": 403, "/models": 403, "/admin": 200}),
    ],
)
async def test_scopes_and_roles(scopes: list[str], role: str, expected: dict[str, int]) -> None:
    async with gateway(FakeAuth({"k": principal(scopes=scopes, role=role)})) as client:
        for path, status in expected.items():
            reply = await get(client, path, "k", "POST" if path == "/chat" else "GET")
            assert reply.status_code == status, (path, reply.text)
            if status == 403:
                assert reply.json()["error"] in ("insufficient_scope", "forbidden")
        assert (await client.get("/admin")).status_code == 401


async def test_metered_routes_charge_quota_limited_tenants_only() -> None:
    unlimited = FakeAuth({"k": principal()})
    async with gateway(unlimited) as client:
        assert (await get(client, "/chat", "k", "POST")).status_code == 200
    assert unlimited.charged == 0, "no round trip for a tenant without a quota"

    limited = FakeAuth({"k": principal(requests_per_day=2)}, quota=2)
    async with gateway(limited) as client:
        assert [(await get(client, "/chat", "k", "POST")).status_code for _ in range(2)] == [200, 200]
        refused = await get(client, "/chat", "k", "POST")
        assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
        assert refused.headers["Retry-After"] == "3600"
        assert (await get(client, "/models", "k")).status_code == 200 and limited.charged == 3, "listing is not metered"


def test_a_tenants_principals_are_forgotten_when_its_limits_change() -> None:
    cache = PrincipalCache(ttl_s=30)
    cache.put("secret-a", principal(tenant_id="acme"))
    cache.put("secret-b", principal(tenant_id="other"))
    cache.forget(tenant_id="acme")
    assert cache.get("secret-a") is None and cache.get("secret-b") is not None


def test_the_signed_principal_carries_the_budgets_auth_verified_and_the_context_no_identity() -> None:
    request = fake_request("10.0.0.1")
    limited = principal(api_key_id="k1", tenant_daily_budget_usd=2.5, key_tokens_per_day=1000)
    verifier = load_signer().verifier()
    signed = verifier.verify(sign_principal(limited))
    assert (signed.api_key_id, signed.tenant_daily_budget_usd, signed.key_tokens_per_day) == ("k1", 2.5, 1000)
    unlimited = verifier.verify(sign_principal(principal()))
    assert unlimited.tenant_daily_budget_usd is None and unlimited.key_tokens_per_day is None
    context = principal_context(limited, request)
    assert context.client_ip == "10.0.0.1"
    assert set(context.DESCRIPTOR.fields_by_name) == {"client_ip"}, "identity travels signed, not in fields"


def fake_request(peer: str, forwarded_for: str = "", trusted: tuple[str, ...] = ()) -> Any:
    """Just what deps.client_ip reads of a request: its peer, its headers and the gateway's proxies."""
    state = SimpleNamespace(gateway=SimpleNamespace(proxies=TrustedProxies(list(trusted))))
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return SimpleNamespace(
        client=SimpleNamespace(host=peer), headers=headers, state=SimpleNamespace(), app=SimpleNamespace(state=state)
    )


def test_the_client_address_auth_sees_is_the_one_the_rate_limiter_sees() -> None:
    # Behind a trusted proxy the client is the forwarded address, so auth's per-(email, address) lockout
    # locks the real client, not the proxy; from anyone else the header is ignored.
    behind_proxy = fake_request("10.1.2.3", "198.51.100.7", trusted=("10.0.0.0/8",))
    assert principal_context(None, behind_proxy).client_ip == "198.51.100.7"
    spoofed = fake_request("203.0.113.9", "198.51.100.7", trusted=("10.0.0.0/8",))
    assert principal_context(None, spoofed).client_ip == "203.0.113.9"
