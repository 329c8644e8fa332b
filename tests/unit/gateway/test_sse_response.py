"""The gateway's SSE answer (services.gateway.api.streams.SseResponse): what it sends is what Starlette's
StreamingResponse sent; a client that goes away mid-stream ends it quietly and closes the events (which
cancels the router's stream, down to the provider); a cancellation from outside is not swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from starlette.responses import StreamingResponse

from goblin.v1 import auth_pb2, auth_pb2_grpc, common_pb2, router_pb2_grpc
from services.common.secrets import DetectionPoint, SecretGuard
from services.gateway.api.streams import SseResponse
from services.gateway.caches import JwksCache, PrincipalCache
from services.gateway.clients import GatewayClients
from services.gateway.config import GatewaySettings
from services.gateway.invalidation import Invalidations
from services.gateway.main import create_app
from services.gateway.ratelimit import TrustedProxies
from services.gateway.state import GatewayState
from services.gateway.stores import GatewayStores
from tests.unit.gateway.backends import abort, every_service_at, grpc_server, scripted_tls

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST", "headers": []}
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Goblin-Ignored-Params": "foo"}


class Events:
    """An events generator that notes whether it was closed; ``hold`` makes it wait after ``n`` events."""

    def __init__(self, n: int = 3, hold: bool = False) -> None:
        self.n, self.hold, self.closed, self.waiting = n, hold, False, asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.n):
                yield b"data: %d\n\n" % i
            if self.hold:
                self.waiting.set()
                await asyncio.Event().wait()
            yield b"data: [DONE]\n\n"
        finally:
            self.closed = True


async def run(response: Any, receive: Callable[[], Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response(dict(SCOPE), receive, send)
    return sent


def staying_client() -> Callable[[], Any]:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


async def test_it_sends_what_streaming_response_sent() -> None:
    ours, theirs = Events(), Events()
    sent = await run(SseResponse(ours(), dict(HEADERS)), staying_client())
    expected = await run(
        StreamingResponse(theirs(), media_type="text/event-stream", headers=dict(HEADERS)), staying_client()
    )
    assert sent == expected
    assert dict(sent[0]["headers"])[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert [m.get("body") for m in sent[1:]] == [
        b"data: 0\n\n",
        b"data: 1\n\n",
        b"data: 2\n\n",
        b"data: [DONE]\n\n",
        b"",
    ]
    assert ours.closed and theirs.closed


async def test_a_client_gone_mid_stream_ends_it_quietly_and_closes_the_events() -> None:
    events = Events(n=1, hold=True)

    async def receive() -> dict[str, Any]:
        await events.waiting.wait()  # the client leaves while the stream waits for the model
        return {"type": "http.disconnect"}

    sent = await asyncio.wait_for(run(SseResponse(events(), dict(HEADERS)), receive), 5)
    assert events.closed, "the events were closed, which cancels the router's stream"
    assert [m.get("body") for m in sent[1:]] == [b"data: 0\n\n"], "nothing after the client left"


async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    events = Events(n=1, hold=True)
    task = asyncio.create_task(run(SseResponse(events(), dict(HEADERS)), staying_client()))
    await asyncio.wait_for(events.waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events.closed


async def test_an_error_of_the_events_is_raised_and_they_are_closed() -> None:
    closed = []

    async def failing() -> AsyncIterator[bytes]:
        try:
            yield b"data: 0\n\n"
            raise RuntimeError("boom")
        finally:
            closed.append(True)

    with pytest.raises(RuntimeError, match="boom"):
        await run(SseResponse(failing(), dict(HEADERS)), staying_client())
    assert closed == [True]


# -- through the app: the router's gRPC stream is cancelled when the client goes away -----------------


class Auth(auth_pb2_grpc.AuthServicer):
    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.Principal:
        if request.credential != "chat-key":
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid credential")
        return auth_pb2.Principal(user_id="u1", tenant_id="t1", role="user", scopes=["chat"], api_key_id="k1")


class SlowRouter(router_pb2_grpc.RouterServicer):
    """One chunk, then nothing until cancelled (a model thinking): notes the cancellation."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def ChatStream(self, request: common_pb2.ChatRequest, context: Any) -> Any:
        yield common_pb2.ChatChunk(model=request.model, provider="openai", role="assistant", delta="a")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_client_gone_mid_stream_cancels_the_router_stream(tmp_path: Path, monkeypatch) -> None:
    for name, value in {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "GOBLIN_HOME": str(tmp_path),
        "GOBLIN_RATE_LIMIT_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    router = SlowRouter()
    async with grpc_server(auth=Auth(), router=router) as address:
        principals = PrincipalCache(settings.auth_cache_ttl_s)
        state = GatewayState(
            settings=settings,
            clients=GatewayClients(every_service_at(address), scripted_tls()),
            stores=GatewayStores(settings),
            secret_guard=SecretGuard(DetectionPoint.request_creation, policy=settings.secret_policy),
            principals=principals,
            invalidations=Invalidations(principals, settings.redis_url.get_secret_value()),
            jwks=JwksCache(),
            proxies=TrustedProxies(settings.trusted_proxy_list),
        )
        app = create_app(settings)
        app.state.gateway = state
        body = b'{"model": "openai/m", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
        first_sent = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await first_sent.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                first_sent.set()

        scope = {
            **SCOPE,
            "http_version": "1.1",
            "scheme": "https",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", b"Bearer chat-key"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("10.0.0.7", 5000),
            "server": ("127.0.0.1", 8443),
        }
        try:
            await asyncio.wait_for(app(scope, receive, send), 5)
            await asyncio.wait_for(router.cancelled.wait(), 5)
        finally:
            await state.clients.close()
    assert sent[0]["status"] == 200
    bodies = [m["body"] for m in sent[1:]]
    assert len(bodies) == 1 and bodies[0].startswith(b"data: {") and b'"content":"a"' in bodies[0]
