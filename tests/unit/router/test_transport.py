"""The provider HTTP layer over real sockets on 127.0.0.1: what each network failure becomes, on the
aiohttp transport (HTTP/1.1) and on httpx's own (the HTTP/2-capable one), and that answers, streams and
kept-alive connections work on both."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from services.router.providers.errors import ProviderBadResponse, ProviderTimeout, ProviderUnavailable
from services.router.providers.http import HttpOptions, egress_proxy, make_transport, uses_http2
from services.router.providers.openai import OpenAICompatibleProvider

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TRANSPORTS = {
    "aiohttp": lambda: AiohttpTransport(),
    "httpx": lambda: httpx.AsyncHTTPTransport(),
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length) if length else b""


def answer(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, content_type, len(body)) + body


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


def provider(base_url: str, kind: str, timeout_s: float = 5.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "openai",
        base_url,
        "sk-test",
        HttpOptions(timeout_s=timeout_s, connect_timeout_s=timeout_s),
        transport=TRANSPORTS[kind](),
    )


@pytest.fixture(params=list(TRANSPORTS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_answers_come_back_on_one_kept_alive_connection(kind: str) -> None:
    connections, bodies = [], []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while not reader.at_eof():
            try:
                bodies.append(json.loads(await read_request(reader)))
            except asyncio.IncompleteReadError:
                break
            writer.write(answer(200, json.dumps({"n": len(bodies)}).encode()))
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    p = provider(url, kind)
    try:
        replies = [await p.post_json("/chat/completions", CHAT) for _ in range(3)]
    finally:
        await p.aclose()
        server.close()
    assert replies == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert bodies == [CHAT] * 3
    assert len(connections) == 1


async def test_server_sent_events_arrive_in_order(kind: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for text in ("data: one\n\n", "event: x\ndata: two\ndata: lines\n\n", "data: [DONE]\n\n"):
            payload = text.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    p = provider(url, kind)
    try:
        async with p.post_sse("/chat/completions", CHAT) as events:
            seen = [(e.event, e.data) async for e in events]
    finally:
        await p.aclose()
        server.close()
    assert seen == [("message", "one"), ("x", "two\nlines"), ("message", "[DONE]")]


async def test_a_provider_that_never_answers_is_a_timeout(kind: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    server, url = await serve(handler)
    p = provider(url, kind, timeout_s=0.3)
    try:
        with pytest.raises(ProviderTimeout):
            await p.post_json("/chat/completions", CHAT)
    finally:
        await p.aclose()
        server.close()


async def test_a_dropped_connection_is_unavailable_not_a_timeout(kind: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    server, url = await serve(handler)
    p = provider(url, kind)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await p.post_json("/chat/completions", CHAT)
    finally:
        await p.aclose()
        server.close()
    assert not isinstance(caught.value, ProviderTimeout)


async def test_a_refused_connection_is_unavailable(kind: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = provider(f"http://127.0.0.1:{port}/v1", kind)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await p.post_json("/chat/completions", CHAT)
    finally:
        await p.aclose()
    assert not isinstance(caught.value, ProviderTimeout)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"this is not HTTP at all\r\n\r\n", id="not-http"),
        pytest.param(answer(200, b"{not json"), id="not-json"),
    ],
)
async def test_garbage_is_a_typed_error(kind: str, reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    p = provider(url, kind)
    try:
        with pytest.raises((ProviderBadResponse, ProviderUnavailable)):
            await p.post_json("/chat/completions", CHAT)
    finally:
        await p.aclose()
        server.close()


def test_http2_only_where_tls_can_negotiate_it() -> None:
    assert uses_http2("https://api.openai.com/v1")
    assert not uses_http2("https://api.openai.com/v1", http2=False)
    assert not uses_http2("http://127.0.0.1:8000/v1")
    assert isinstance(make_transport("https://api.openai.com/v1", HttpOptions()), httpx.AsyncHTTPTransport)
    assert isinstance(make_transport("http://127.0.0.1:8000/v1", HttpOptions()), AiohttpTransport)


async def test_calls_go_through_the_egress_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY as httpx's AsyncClient would honour it: the proxy gets the absolute URI (so a host that
    only the proxy can resolve is reachable), and NO_PROXY hosts are called directly."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.write(answer(200, b'{"via": "proxy"}'))
        await writer.drain()
        writer.close()

    server, proxy_url = await serve(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    for name in ("http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    p = OpenAICompatibleProvider("openai", "http://provider.invalid/v1", "sk-test", HttpOptions())
    try:
        assert await p.post_json("/chat/completions", CHAT) == {"via": "proxy"}
    finally:
        await p.aclose()
        server.close()
    assert seen == [b"POST http://provider.invalid/v1/chat/completions HTTP/1.1"]
    assert egress_proxy("http://direct.invalid/v1") is None


def test_https_providers_reach_the_proxy_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    for name in ("https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = egress_proxy("https://api.openai.com/v1")
    assert proxy is not None and proxy.url == httpx.URL("http://proxy.internal:3128")
    transport = make_transport("https://api.openai.com/v1", HttpOptions())
    assert type(transport._pool).__name__ == "AsyncHTTPProxy"  # the HTTP/2 transport tunnels through it
