"""HTTP/2 where the provider offers it: an ``https://`` provider that speaks only HTTP/2 (ALPN ``h2``,
a real TLS handshake and h2 framing on 127.0.0.1) answers the router's calls, unary and streamed, on one
connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from goblin_tools.fakes.h2 import H2OnlyProvider, h2_only_context
from services.gateway.tls import ensure_dev_certificates
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def h2_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[H2OnlyProvider, str]]:
    ca, cert, key = ensure_dev_certificates(tmp_path)
    fake = H2OnlyProvider()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, ssl=h2_only_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # how a deployment trusts a private CA, too
    try:
        yield fake, f"https://127.0.0.1:{port}/v1"
    finally:
        server.close()


async def test_an_https_provider_that_offers_http2_gets_it(h2_provider: tuple[H2OnlyProvider, str]) -> None:
    fake, url = h2_provider
    provider = OpenAICompatibleProvider("openai", url, "sk-test", HttpOptions())
    try:
        answers = [await provider.post_json("/chat/completions", CHAT) for _ in range(3)]
        async with provider.post_sse("/chat/completions", CHAT) as events:
            streamed = [e.data async for e in events]
    finally:
        await provider.aclose()
    assert answers == [{"echo": CHAT}] * 3
    assert streamed == ["one", "[DONE]"]
    assert fake.alpn == ["h2"]
    assert fake.connections == 1  # four requests, one multiplexed connection
    assert all(r[":method"] == "POST" and r[":path"] == "/v1/chat/completions" for r in fake.requests)
    assert all(r["authorization"] == "Bearer sk-test" for r in fake.requests)
    assert all(r["user-agent"].startswith("goblin-router/") for r in fake.requests)


async def test_http2_can_be_switched_off_per_provider(h2_provider: tuple[H2OnlyProvider, str]) -> None:
    """``http2: false`` in the catalog: HTTP/1.1 only, which this provider refuses in the handshake."""
    fake, url = h2_provider
    provider = OpenAICompatibleProvider("openai", url, "sk-test", HttpOptions(), http2=False)
    try:
        with pytest.raises(Exception, match="(?i)unavailable|reach|alpn|handshake|protocol"):
            await provider.post_json("/chat/completions", CHAT)
    finally:
        await provider.aclose()
    assert fake.requests == []
