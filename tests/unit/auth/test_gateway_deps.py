"""The gateway's side of auth: the principal cache, scope and admin checks, the request quota charge."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from goblin.v1 import auth_pb2
from services.gateway.deps import AdminDep, ChatDep, ChatReadDep, PrincipalCache, PrincipalDep, principal_context
from services.gateway.errors import install_error_handlers


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple = ()) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)


class FakeAuth:
    """Auth.Authenticate and Auth.ChargeRequest, counting calls."""

    def __init__(self, principals: dict[str, auth_pb2.Principal], quota: int = 0) -> None:
        self.principals = principals
        self.quota = quota
        self.authenticate_calls = 0
        self.charged = 0

    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, **options: Any) -> auth_pb2.Principal:
        self.authenticate_calls += 1
        if request.credential not in self.principals:
            raise FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "invalid credential")
        return self.principals[request.credential]

    async def ChargeRequest(self, request: auth_pb2.ChargeRequestRequest, **options: Any) -> Any:
        self.charged += 1
        if self.charged > self.quota:
            raise FakeRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "quota used up",
                (("goblin-error-code", "quota_exceeded"), ("retry-after", "3600.000")),
            )
        return auth_pb2.QuotaStatus(used=self.charged, limit=self.quota)


def principal(**fields: Any) -> auth_pb2.Principal:
    base: dict[str, Any] = {"user_id": "u1", "tenant_id": "t1", "role": "user", "scopes": ["*"]}
    return auth_pb2.Principal(**{**base, **fields})


def make_client(auth: FakeAuth, ttl_s: float = 30.0) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.settings = SimpleNamespace(auth_cache_ttl_s=ttl_s)
    app.state.backends = SimpleNamespace(auth=auth)

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

    return TestClient(app)


def get(client: TestClient, path: str, credential: str, method: str = "GET") -> Any:
    return client.request(method, path, headers={"Authorization": f"Bearer {credential}"})


def test_a_verified_credential_is_asked_for_once_within_the_ttl() -> None:
    auth = FakeAuth({"k1": principal()})
    client = make_client(auth)
    assert [get(client, "/me", "k1").status_code for _ in range(5)] == [200] * 5
    assert auth.authenticate_calls == 1
    assert get(client, "/me", "nope").status_code == 401
    assert get(client, "/me", "nope").status_code == 401
    assert auth.authenticate_calls == 3, "refusals are not cached"


def test_ttl_zero_turns_the_cache_off() -> None:
    auth = FakeAuth({"k1": principal()})
    client = make_client(auth, ttl_s=0)
    for _ in range(3):
        get(client, "/me", "k1")
    assert auth.authenticate_calls == 3


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


def test_a_tenants_principals_are_forgotten_when_its_limits_change() -> None:
    cache = PrincipalCache(ttl_s=30)
    cache.put("secret-a", principal(tenant_id="acme"))
    cache.put("secret-b", principal(tenant_id="other"))
    cache.forget(tenant_id="acme")
    assert cache.get("secret-a") is None and cache.get("secret-b") is not None


def test_the_forwarded_context_carries_the_budgets_auth_verified() -> None:
    request: Any = SimpleNamespace(client=SimpleNamespace(host="10.0.0.1"))
    limited = principal(api_key_id="k1", tenant_daily_budget_usd=2.5, key_tokens_per_day=1000)
    context = principal_context(limited, request)
    assert context.tenant_daily_budget_usd == 2.5 and context.key_tokens_per_day == 1000
    unlimited = principal_context(principal(), request)
    assert not unlimited.HasField("tenant_daily_budget_usd") and not unlimited.HasField("key_tokens_per_day")


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
def test_scopes_and_roles(scopes: list[str], role: str, expected: dict[str, int]) -> None:
    client = make_client(FakeAuth({"k": principal(scopes=scopes, role=role)}))
    for path, status in expected.items():
        reply = get(client, path, "k", "POST" if path == "/chat" else "GET")
        assert reply.status_code == status, (path, reply.text)
        if status == 403:
            assert reply.json()["error"] in ("insufficient_scope", "forbidden")
    assert client.get("/admin").status_code == 401


def test_metered_routes_charge_quota_limited_tenants_only() -> None:
    unlimited = FakeAuth({"k": principal()})
    client = make_client(unlimited)
    assert get(client, "/chat", "k", "POST").status_code == 200
    assert unlimited.charged == 0, "no round trip for a tenant without a quota"

    limited = FakeAuth({"k": principal(requests_per_day=2)}, quota=2)
    client = make_client(limited)
    assert [get(client, "/chat", "k", "POST").status_code for _ in range(2)] == [200, 200]
    refused = get(client, "/chat", "k", "POST")
    assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
    assert refused.headers["Retry-After"] == "3600"
    assert get(client, "/models", "k").status_code == 200 and limited.charged == 3, "listing is not metered"
