"""HTTP/2 where the provider offers it: an ``https://`` provider that speaks only HTTP/2 (ALPN ``h2``,
a real TLS handshake and h2 framing on 127.0.0.1) answers the router's calls, unary and streamed, on one
connection."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from services.gateway.tls import ensure_dev_certificates
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class H2OnlyProvider:
    """Answers every POST on HTTP/2 only: the JSON ``{"echo": <request body>}``, or, when the request
    asks for ``text/event-stream``, two SSE events. Records what it saw."""

    def __init__(self) -> None:
        self.alpn: list[str | None] = []
        self.requests: list[dict[str, str]] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        headers: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytes] = {}
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
                    bodies[event.stream_id] = b""
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.requests.append(headers[event.stream_id])
                    self.answer(conn, event.stream_id, headers[event.stream_id], bodies[event.stream_id])
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    @staticmethod
    def answer(conn: h2.connection.H2Connection, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        if headers.get("accept") == "text/event-stream":
            payload = b"data: one\n\ndata: [DONE]\n\n"
            content_type = b"text/event-stream"
        else:
            payload = json.dumps({"echo": json.loads(body)}).encode()
            content_type = b"application/json"
        length = b"%d" % len(payload)
        response = [(b":status", b"200"), (b"content-type", content_type), (b"content-length", length)]
        conn.send_headers(stream_id, response)
        conn.send_data(stream_id, payload, end_stream=True)


@pytest.fixture
async def h2_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[H2OnlyProvider, str]]:
    ca, cert, key = ensure_dev_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])  # HTTP/2 or nothing
    fake = H2OnlyProvider()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, ssl=context)
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
