"""The pure-ASGI chat and completion routes (services.gateway.api.asgi_routes) against their FastAPI
routes: the whole gateway app built twice by ``create_app`` (with and without them) over one shared
state whose auth and router are real gRPC servers with scripted answers, so every answer (status,
headers, body) can be compared byte for byte, good bodies and bad ones; then the attacks."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from goblin.v1 import auth_pb2, auth_pb2_grpc, common_pb2, router_pb2_grpc
from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY
from services.common.principal import PRINCIPAL_METADATA_KEY
from services.common.secrets import DetectionPoint, SecretGuard
from services.gateway.caches import JwksCache, PrincipalCache
from services.gateway.clients import GatewayClients
from services.gateway.config import GatewaySettings
from services.gateway.invalidation import Invalidations
from services.gateway.main import create_app
from services.gateway.ratelimit import TrustedProxies
from services.gateway.state import GatewayState
from services.gateway.stores import GatewayStores
from tests.unit.gateway.backends import abort, every_service_at, grpc_server, scripted_tls

PRINCIPALS = {
    "chat-key": auth_pb2.Principal(user_id="u1", tenant_id="t1", role="user", scopes=["chat"], api_key_id="k1"),
    "all-key": auth_pb2.Principal(user_id="u2", tenant_id="t2", role="admin", scopes=["*"], api_key_id="k2"),
    "keys-key": auth_pb2.Principal(user_id="u3", tenant_id="t1", role="user", scopes=["keys"], api_key_id="k3"),
    "spent-key": auth_pb2.Principal(
        user_id="u4", tenant_id="t4", role="user", scopes=["chat"], api_key_id="k4", requests_per_day=1
    ),
}
# A GitHub token shape the request-side scanner redacts (services.common.secret_detectors).
SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def claims(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The signed principal the gateway sent with the call (its claims; the router verifies them)."""
    for key, value in context.invocation_metadata() or ():
        if key == PRINCIPAL_METADATA_KEY:
            body = value.partition(".")[0]
            return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode())
    return {}


class ScriptedAuth(auth_pb2_grpc.AuthServicer):
    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.Principal:
        principal = PRINCIPALS.get(request.credential)
        if principal is None:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid credential")
        return principal

    async def ChargeRequest(self, request: auth_pb2.ChargeRequestRequest, context: Any) -> auth_pb2.QuotaStatus:
        await abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the tenant's requests for today are spent",
            ((ERROR_CODE_KEY, "quota_exceeded"), (RETRY_AFTER_KEY, "3600")),
        )
        return auth_pb2.QuotaStatus()


class ScriptedRouter(router_pb2_grpc.RouterServicer):
    """Answers with what it was sent (the last message, the tenant it was told, the params), so the
    answer shows what left the gateway; ``full`` refuses, ``broken`` fails mid-stream."""

    async def Chat(self, request: common_pb2.ChatRequest, context: Any) -> common_pb2.ChatResponse:
        if request.model == "full":
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "queue full",
                ((ERROR_CODE_KEY, "inference_queue_full"), (RETRY_AFTER_KEY, "1.500")),
            )
        said = f"{claims(context).get('ten')}|{request.messages[-1].content}|{request.params.max_tokens}"
        return common_pb2.ChatResponse(
            id="chatcmpl-fixed",
            created=1_800_000_000,
            model=request.model,
            provider="openai",
            message=common_pb2.ChatMessage(role="assistant", content=said),
            finish_reason="stop",
            usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2),
        )

    async def ChatStream(self, request: common_pb2.ChatRequest, context: Any) -> Any:
        if request.model == "full":
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        yield common_pb2.ChatChunk(model=request.model, provider="openai", role="assistant", delta="a")
        if request.model == "broken":
            await abort(context, grpc.StatusCode.INTERNAL, "the model crashed")
        yield common_pb2.ChatChunk(model=request.model, provider="openai", delta=request.messages[-1].content)
        yield common_pb2.ChatChunk(
            model=request.model, finish_reason="stop", usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2)
        )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> GatewaySettings:
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    for name, value in {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "GOBLIN_HOME": str(home),
        "GOBLIN_RATE_LIMIT_ENABLED": "false",
    }.items():
        mp.setenv(name, value)
    yield GatewaySettings()
    mp.undo()


@pytest.fixture(scope="module")
async def apps(settings: GatewaySettings) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """(FastAPI routes, pure-ASGI routes): two apps over one state, its backends scripted servers."""
    async with grpc_server(auth=ScriptedAuth(), router=ScriptedRouter()) as address:
        stores = GatewayStores(settings)
        principals = PrincipalCache(settings.auth_cache_ttl_s)
        state = GatewayState(
            settings=settings,
            clients=GatewayClients(every_service_at(address), scripted_tls()),
            stores=stores,
            secret_guard=SecretGuard(DetectionPoint.request_creation, policy=settings.secret_policy),
            principals=principals,
            invalidations=Invalidations(principals, settings.redis_url.get_secret_value()),
            jwks=JwksCache(),
            proxies=TrustedProxies(settings.trusted_proxy_list),
        )
        old, new = create_app(settings, asgi_routes=False), create_app(settings)
        for app in (old, new):
            app.state.gateway = state  # what the lifespan would set; nothing here connects to stores
        try:
            yield old, new
        finally:
            await state.clients.close()


async def post(app: FastAPI, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway") as client:
        return await client.post(path, content=content, headers={"X-Correlation-ID": "same-id", **headers})


def comparable(reply: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body, with what differs between any two answers by design taken out: the
    trace id (random per request) and, in SSE, each stream's fresh completion id and creation time."""
    headers = [(k, v) for k, v in reply.headers.multi_items() if k != "x-trace-id"]
    body = reply.content
    if body.startswith(b'{"id":"cmpl-'):  # a text completion's id is made by the gateway, fresh each time
        body = json.dumps({**json.loads(body), "id": None}).encode()
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        events = []
        for line in body.split(b"\n\n"):
            if line.startswith(b"data: {"):
                event = json.loads(line[6:])
                event.pop("id", None)
                event.pop("created", None)
                line = b"data: " + json.dumps(event).encode()
            events.append(line)
        body = b"\n\n".join(events)
    return reply.status_code, headers, body


CHAT = {"model": "openai/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
JSON = {"Content-Type": "application/json"}
BEARER = {"Authorization": "Bearer chat-key"}

CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    # good bodies
    ("chat", "/v1/chat/completions", json.dumps(CHAT).encode(), {**JSON, **BEARER}),
    ("alias", "/chat/completions", json.dumps(CHAT).encode(), {**JSON, **BEARER}),
    ("n=2", "/v1/chat/completions", json.dumps({**CHAT, "n": 2}).encode(), {**JSON, **BEARER}),
    ("ignored", "/v1/chat/completions", json.dumps({**CHAT, "zzz": 1, "aaa": 2}).encode(), {**JSON, **BEARER}),
    ("+json", "/v1/chat/completions", json.dumps(CHAT).encode(), {"Content-Type": "application/vnd+json", **BEARER}),
    ("stream", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode(), {**JSON, **BEARER}),
    (
        "stream usage",
        "/v1/chat/completions",
        json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode(),
        {**JSON, **BEARER},
    ),
    ("completion", "/v1/completions", json.dumps({"model": "openai/m", "prompt": "hi"}).encode(), {**JSON, **BEARER}),
    (
        "completion stream",
        "/completions",
        json.dumps({"model": "openai/m", "prompt": "hi", "stream": True, "echo": True}).encode(),
        {**JSON, **BEARER},
    ),
    (
        "secret",
        "/v1/chat/completions",
        json.dumps({**CHAT, "messages": [{"role": "user", "content": f"key {SECRET}"}]}).encode(),
        {**JSON, **BEARER},
    ),
    # refusals by the backends
    ("queue full", "/v1/chat/completions", json.dumps({**CHAT, "model": "full"}).encode(), {**JSON, **BEARER}),
    (
        "stream refused",
        "/v1/chat/completions",
        json.dumps({**CHAT, "model": "full", "stream": True}).encode(),
        {**JSON, **BEARER},
    ),
    (
        "broken mid-stream",
        "/v1/chat/completions",
        json.dumps({**CHAT, "model": "broken", "stream": True}).encode(),
        {**JSON, **BEARER},
    ),
    # bad bodies
    ("malformed JSON", "/v1/chat/completions", b'{"model": "x", "messages": [', {**JSON, **BEARER}),
    ("malformed, no key", "/v1/chat/completions", b"{nope", JSON),
    ("bad UTF-8", "/v1/chat/completions", b'{"model": "\xff\xfe"}', {**JSON, **BEARER}),
    ("empty", "/v1/chat/completions", b"", {**JSON, **BEARER}),
    ("a list", "/v1/chat/completions", b"[1, 2]", {**JSON, **BEARER}),
    ("text/plain", "/v1/chat/completions", json.dumps(CHAT).encode(), {"Content-Type": "text/plain", **BEARER}),
    ("no content type", "/v1/chat/completions", json.dumps(CHAT).encode(), BEARER),
    ("form", "/v1/chat/completions", b"model=x", {"Content-Type": "application/x-www-form-urlencoded", **BEARER}),
    ("missing fields", "/v1/chat/completions", b"{}", {**JSON, **BEARER}),
    (
        "out of range",
        "/v1/chat/completions",
        json.dumps({**CHAT, "temperature": 9, "n": 99}).encode(),
        {**JSON, **BEARER},
    ),
    ("unsupported", "/v1/chat/completions", json.dumps({**CHAT, "audio": {"voice": "x"}}).encode(), {**JSON, **BEARER}),
    (
        "bad role",
        "/v1/chat/completions",
        json.dumps({**CHAT, "messages": [{"role": "god", "content": "x"}]}).encode(),
        {**JSON, **BEARER},
    ),
    (
        "lone surrogate",
        "/v1/chat/completions",
        b'{"model": "openai/m", "messages": [{"role": "user", "content": "\\ud800"}]}',
        {**JSON, **BEARER},
    ),
    (
        "orphan function",
        "/v1/chat/completions",
        json.dumps({**CHAT, "messages": [{"role": "function", "name": "f", "content": "x"}]}).encode(),
        {**JSON, **BEARER},
    ),
    (
        "NaN",
        "/v1/chat/completions",
        b'{"model": "openai/m", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        {**JSON, **BEARER},
    ),
    (
        "bad completion",
        "/v1/completions",
        json.dumps({"model": "m", "prompt": ["a", "b"]}).encode(),
        {**JSON, **BEARER},
    ),
    # who is asking
    ("no credential", "/v1/chat/completions", json.dumps(CHAT).encode(), JSON),
    ("not bearer", "/v1/chat/completions", json.dumps(CHAT).encode(), {**JSON, "Authorization": "Basic eDp5"}),
    ("unknown key", "/v1/chat/completions", json.dumps(CHAT).encode(), {**JSON, "Authorization": "Bearer nope"}),
    ("narrower scope", "/v1/chat/completions", json.dumps(CHAT).encode(), {**JSON, "Authorization": "Bearer keys-key"}),
    ("narrower scope, bad body", "/v1/chat/completions", b"{}", {**JSON, "Authorization": "Bearer keys-key"}),
    ("quota spent", "/v1/chat/completions", json.dumps(CHAT).encode(), {**JSON, "Authorization": "Bearer spent-key"}),
    (
        "rag without scope",
        "/v1/chat/completions",
        json.dumps({**CHAT, "goblin": {"rag": {"collection": "c"}}}).encode(),
        {**JSON, **BEARER},
    ),
]


@pytest.mark.parametrize(("case", "path", "content", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_both_paths_answer_byte_for_byte_alike(
    apps: tuple[FastAPI, FastAPI], case: str, path: str, content: bytes, headers: dict[str, str]
) -> None:
    old, new = apps
    before, after = await post(old, path, content, headers), await post(new, path, content, headers)
    assert comparable(after) == comparable(before)
    assert after.status_code < 500, after.text


async def test_the_asgi_path_is_the_one_answering(
    apps: tuple[FastAPI, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not FastAPI's route under another name: with the pure-ASGI routes no APIRoute handles the
    request; without them one does (so the comparison above compares two paths)."""
    old, new = apps
    handled: list[str] = []
    original = APIRoute.handle

    async def spy(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        handled.append(self.path)
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", spy)
    for path, content in (("/v1/chat/completions", CHAT), ("/v1/completions", {"model": "m", "prompt": "hi"})):
        assert (await post(new, path, json.dumps(content).encode(), {**JSON, **BEARER})).status_code == 200
        assert handled == []
        assert (await post(old, path, json.dumps(content).encode(), {**JSON, **BEARER})).status_code == 200
        assert handled == [path]
        handled.clear()


async def gone_mid_body(app: FastAPI) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """What ``app`` sends when the body's first part comes and then the client is gone."""
    messages = [
        {"type": "http.request", "body": b'{"model": "openai/m", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer chat-key")]
    headers += [(b"content-length", b"500"), (b"x-correlation-id", b"same-id")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("10.0.0.7", 5000),
        "server": ("gateway", 443),
    }
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], [h for h in start["headers"] if h[0] != b"x-trace-id"], sent[1]["body"]


async def test_a_client_gone_mid_body_is_answered_alike(apps: tuple[FastAPI, FastAPI]) -> None:
    """Both paths answer the same 400 (to nobody), so the access log and metrics say the same."""
    old, new = apps
    before, after = await gone_mid_body(old), await gone_mid_body(new)
    assert after == before
    assert after[0] == 400


async def test_attacks(apps: tuple[FastAPI, FastAPI]) -> None:
    _, new = apps
    good = json.dumps(CHAT).encode()
    # The tenant is the signed principal's, whatever the body claims.
    body = json.dumps({**CHAT, "user": "t2", "metadata": {"tenant_id": "t2"}, "tenant_id": "t2"}).encode()
    reply = await post(new, "/v1/chat/completions", body, {**JSON, **BEARER})
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"].startswith("t1|")
    assert reply.headers["x-goblin-ignored-params"] == "tenant_id"
    # A narrower scope: 403 with the challenge, nothing sent on.
    reply = await post(new, "/v1/chat/completions", good, {**JSON, "Authorization": "Bearer keys-key"})
    assert (reply.status_code, reply.json()["error"]) == (403, "insufficient_scope")
    assert 'scope="chat"' in reply.headers["www-authenticate"]
    # Hostile text: the secret never reaches the router; markup is text, not interpreted.
    hostile = f"<script>alert(1)</script> {SECRET} \u202e\x00"
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": hostile}]}).encode()
    reply = await post(new, "/v1/chat/completions", body, {**JSON, **BEARER})
    assert reply.status_code == 200
    said = reply.json()["choices"][0]["message"]["content"]
    assert SECRET not in said and "<script>" in said
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-content-type-options"] == "nosniff"
    # Wrong content type, malformed JSON: clear 400s.
    for content, headers in ((good, {"Content-Type": "text/plain"}), (b"{", JSON)):
        reply = await post(new, "/v1/chat/completions", content, {**headers, **BEARER})
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_request")
        assert reply.json()["correlation_id"] == "same-id"


async def test_an_oversized_body_is_refused_at_the_edge(
    apps: tuple[FastAPI, FastAPI], settings: GatewaySettings
) -> None:
    _, new = apps
    limit = settings.max_chat_body_bytes
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * limit}]}).encode()
    reply = await post(new, "/v1/chat/completions", big, {**JSON, **BEARER})
    assert (reply.status_code, reply.json()["error"]) == (413, "payload_too_large")

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield big[: limit // 2]

    transport = httpx.ASGITransport(app=new)
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway") as client:
        reply = await client.post("/v1/chat/completions", content=chunked(), headers={**JSON, **BEARER})
    assert reply.status_code == 413


def test_the_schema_still_lists_the_routes(apps: tuple[FastAPI, FastAPI], tmp_path: Path) -> None:
    _, new = apps
    paths = new.openapi()["paths"]
    for path in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"):
        assert "post" in paths[path]
    schema = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/ChatCompletionRequest")
