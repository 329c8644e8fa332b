"""The gateway's one edge middleware (services.gateway.middleware.EdgeMiddleware) on a small app, with
a real Redis behind its rate limits: every behaviour of the middlewares it replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse

from services.gateway.middleware import EdgeMiddleware, RateLimits, RouteTemplates
from services.gateway.ratelimit import RateLimiter, RouteClass, TrustedProxies, parse_limits

SECURITY = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def edge_app(redis_url: str | None, *, cors: bool = False, chat_limit: str = "1000/minute") -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/v1/tasks")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.get("/v1/page")
    async def page() -> HTMLResponse:
        return HTMLResponse("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'self'"})

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("not for the client")

    @app.get("/v1/slow")
    async def slow() -> None:
        await asyncio.sleep(5)

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.2)
                yield b"x"

        return StreamingResponse(chunks())

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, str]:
        return {"ok": "chat"}

    rate_limits = None
    if redis_url is not None:
        limiter = RateLimiter(
            redis_url,
            {c: parse_limits(chat_limit if c is RouteClass.chat else "1000/minute") for c in RouteClass},
        )
        rate_limits = RateLimits(limiter, TrustedProxies([]), verified=lambda credential: None)
    app.add_middleware(
        EdgeMiddleware,
        templates=RouteTemplates(lambda: ["/v1/models", "/v1/tasks"]),
        max_bytes=64,
        chat_bytes=128,
        default_timeout_s=0.3,
        chat_timeout_s=10,
        rate_limits=rate_limits,
        cors={"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"]} if cors else None,
    )
    return app


def client_of(app: FastAPI, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 1234))
    return httpx.AsyncClient(transport=transport, base_url="https://gateway.test")


def assert_envelope(reply: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert reply.headers.get(name) == value, name
    assert reply.headers["x-correlation-id"] and reply.headers["x-trace-id"]


async def test_headers_on_answers_and_a_routes_own_csp(redis_url: str) -> None:
    async with client_of(edge_app(redis_url), ip=f"10.1.{uuid.uuid4().int % 250}.1") as client:
        reply = await client.get("/v1/models", headers={"X-Correlation-ID": "abc-123"})
        assert reply.status_code == 200
        assert_envelope(reply)
        assert reply.headers["x-correlation-id"] == "abc-123"
        assert reply.headers["x-ratelimit-limit"] == "1000" and reply.headers["x-ratelimit-remaining"] == "999"
        hostile = await client.get("/v1/models", headers={"X-Correlation-ID": "<script>"})
        assert hostile.headers["x-correlation-id"] != "<script>"
        page = await client.get("/v1/page")
        assert page.headers["content-security-policy"] == "default-src 'self'"
        assert page.headers.get_list("content-security-policy") == ["default-src 'self'"]


async def test_unhandled_error_is_the_500_envelope() -> None:
    async with client_of(edge_app(None)) as client:
        reply = await client.get("/v1/boom")
    assert reply.status_code == 500
    assert_envelope(reply)
    body = reply.json()
    assert body["error"] == "internal_error" and "not for the client" not in reply.text
    assert body["correlation_id"] == reply.headers["x-correlation-id"]
    assert "x-ratelimit-limit" not in reply.headers


async def test_body_limits() -> None:
    async with client_of(edge_app(None)) as client:
        too_big = await client.post("/v1/tasks", json={"a": "x" * 100})
        assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
        assert_envelope(too_big)
        # Chat completions have a limit of their own.
        assert (await client.post("/v1/chat/completions", json={"a": "x" * 100})).status_code == 200

        async def chunked(size: int) -> AsyncIterator[bytes]:
            yield b'{"a": "' + b"x" * size + b'"}'

        json_type = {"Content-Type": "application/json"}
        assert (await client.post("/v1/tasks", content=chunked(10), headers=json_type)).json() == {"a": "x" * 10}
        assert (await client.post("/v1/tasks", content=chunked(100), headers=json_type)).status_code == 413
        bad = await client.post("/v1/tasks", content=b"{}", headers={"Content-Length": "two"})
        assert bad.status_code == 400


async def test_timeout_before_the_answer_but_not_during_a_stream() -> None:
    async with client_of(edge_app(None)) as client:
        slow = await client.get("/v1/slow")
        assert slow.status_code == 504 and slow.json()["error"] == "timeout"
        assert_envelope(slow)
        stream = await client.get("/v1/stream")  # 0.6 s in all, over the 0.3 s limit once started
        assert stream.status_code == 200 and stream.content == b"xxx"


async def test_rate_limit_refusal_and_cors(redis_url: str) -> None:
    app = edge_app(redis_url, cors=True, chat_limit="2/minute")
    async with client_of(app, ip=f"10.2.{uuid.uuid4().int % 250}.1") as client:
        origin = {"Origin": "https://app.example"}
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", headers=origin)).status_code == 200
        refused = await client.post("/v1/chat/completions", headers=origin)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["access-control-allow-origin"] == "https://app.example"
        assert_envelope(refused)
        # A preflight is answered by CORS and never charged.
        preflight = await client.options(
            "/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200 and "x-ratelimit-limit" not in preflight.headers
        assert_envelope(preflight)


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_down(fail_open: bool) -> None:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, str]:
        return {"ok": "yes"}

    limiter = RateLimiter("redis://127.0.0.1:1", {c: parse_limits("5/minute") for c in RouteClass}, fail_open=fail_open)
    app.add_middleware(
        EdgeMiddleware,
        max_bytes=64,
        default_timeout_s=5,
        chat_timeout_s=5,
        rate_limits=RateLimits(limiter, TrustedProxies([]), verified=lambda credential: None),
    )
    async with client_of(app) as client:
        reply = await client.get("/v1/models")
    assert reply.status_code == (200 if fail_open else 503)
    assert "x-ratelimit-limit" not in reply.headers
