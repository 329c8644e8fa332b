"""An event stream's head leaves with its first event in one write (services/gateway/http_protocol.py),
over the gateway's real uvicorn configuration and TLS; every byte is what uvicorn wrote before, and any
other answer is written as uvicorn writes it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest

from services.gateway import http_protocol
from tests.unit.gateway.test_http_protocol_h2_raw import serving

PAUSE_S = 0.3  # between the head and the first event: long enough that separate writes arrive apart


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/json":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await asyncio.sleep(PAUSE_S)
        await send({"type": "http.response.body", "body": b'{"ok": true}'})
        return
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await asyncio.sleep(PAUSE_S)  # the model thinks: the head waits for the first event
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def exchange(port: int, context: ssl.SSLContext, path: str) -> tuple[bytes, bytes]:
    """(what the first read after the request got, everything until the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".encode())
            first = tls.recv(65536)
            rest = []
            while chunk := tls.recv(65536):
                rest.append(chunk)
    return first, first + b"".join(rest)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with serving(app, tmp_path_factory.mktemp("tls")) as (_, port, context):
        yield port, context


def test_the_head_waits_for_the_first_event_and_leaves_with_it(server: Any) -> None:
    first, whole = exchange(*server, "/sse")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"data: first\n\n" in first, first
    assert whole.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_every_byte_is_what_uvicorn_wrote(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    coalesced = exchange(*server, "/sse")[1]
    monkeypatch.setattr(http_protocol, "coalesce_event_stream_head", lambda cycle: None)
    first, plain = exchange(*server, "/sse")
    assert b"data: first" not in first, "uncoalesced, the head leaves alone (what the first test relies on)"

    def without_date(data: bytes) -> bytes:
        return b"\r\n".join(line for line in data.split(b"\r\n") if not line.lower().startswith(b"date:"))

    assert without_date(coalesced) == without_date(plain)


def test_other_answers_are_written_as_uvicorn_writes_them(server: Any) -> None:
    first, whole = exchange(*server, "/json")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b'{"ok": true}' not in first, "the head left at once"
    assert whole.endswith(b'{"ok": true}\r\n0\r\n\r\n') or whole.endswith(b'{"ok": true}')


def test_is_event_stream_reads_the_content_type() -> None:
    assert http_protocol.is_event_stream({"headers": [(b"Content-Type", b"Text/Event-Stream; charset=utf-8")]})
    assert not http_protocol.is_event_stream({"headers": [(b"content-type", b"application/json")]})
    assert not http_protocol.is_event_stream({"headers": [(b"x-note", b"text/event-stream")]})
    assert not http_protocol.is_event_stream({})


def test_the_protocol_used_is_the_one_coalescing() -> None:
    from services.gateway.http2 import AlpnHttpProtocol

    assert issubclass(AlpnHttpProtocol, http_protocol.BoundedHttpToolsProtocol)
    assert "_start_asgi_task" in vars(http_protocol.BoundedHttpToolsProtocol)
