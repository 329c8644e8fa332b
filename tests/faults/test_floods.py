"""Floods and hostile bytes at the gateway (issue 19, case 6): everything refused with a 4xx, never a 5xx,
and the gateway keeps answering everyone else while 2,000 idle connections and slow-header clients hang
on to it."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from goblin_tools.suite import Suite
from services.gateway.config import GatewaySettings
from services.gateway.http_protocol import HEAD_TIMEOUT_S, MAX_HEAD_BYTES

pytestmark = pytest.mark.faults

# The chat route's own limit (GOBLIN_MAX_CHAT_BODY_BYTES' default: images travel as data: URLs).
MAX_BODY = GatewaySettings.model_fields["max_chat_body_bytes"].default
# Every other route's (GOBLIN_MAX_BODY_BYTES' default).
MAX_OTHER_BODY = GatewaySettings.model_fields["max_body_bytes"].default


def post_raw(suite: Suite, body: bytes, content_type: str = "application/json") -> httpx.Response:
    with suite.client(timeout=30, headers={"Authorization": f"Bearer {suite.admin_key}"}) as client:
        return client.post("/v1/chat/completions", content=body, headers={"Content-Type": content_type})


def assert_clean_4xx(reply: httpx.Response) -> None:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert "error" in reply.json(), reply.text[:300]


def test_a_body_over_the_limit_is_413_and_one_at_the_limit_is_not_a_5xx(suite: Suite) -> None:
    over = post_raw(suite, b"{" + b" " * MAX_BODY + b"}")
    assert over.status_code == 413, over.text[:300]
    assert_clean_4xx(over)
    at = post_raw(suite, b'{"model": "local", "messages": [], "pad": "' + b"x" * (MAX_BODY - 60) + b'"}')
    assert_clean_4xx(at)


def test_a_chunked_body_over_the_limit_is_413(suite: Suite) -> None:
    # No Content-Length to refuse it by: the gateway counts the chunks as they come.
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "local", "messages": [], "pad": "'
        for _ in range(MAX_BODY // (1 << 20) + 1):
            yield b"x" * (1 << 20)
        yield b'"}'

    with suite.client(timeout=60, headers={"Authorization": f"Bearer {suite.admin_key}"}) as client:
        try:
            reply = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
        except (httpx.RemoteProtocolError, httpx.WriteError):
            pytest.fail("the gateway dropped the connection instead of answering 413")
    assert reply.status_code == 413, reply.text[:300]
    assert_clean_4xx(reply)


def test_a_body_over_the_other_routes_limit_is_413(suite: Suite) -> None:
    # Not a chat: the 1 MiB limit, well under the chat route's.
    with suite.admin_client() as client:
        reply = client.post("/v1/embeddings", json={"model": "local", "input": "x" * (MAX_OTHER_BODY + 1)})
    assert reply.status_code == 413, reply.text[:300]
    assert_clean_4xx(reply)


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_json_is_a_400(suite: Suite, depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = b'{"model": "local", "messages": ' + opener * depth + b"1" + closer * depth + b"}"
    assert_clean_4xx(post_raw(suite, body))


def test_invalid_utf8_is_a_400(suite: Suite) -> None:
    body = b'{"model": "local", "messages": [{"role": "user", "content": "\xff\xfe\xc3\x28"}]}'
    assert_clean_4xx(post_raw(suite, body))


def test_invalid_utf8_in_a_header_or_the_path_is_never_a_5xx(suite: Suite) -> None:
    with suite.client(timeout=30, headers={"Authorization": f"Bearer {suite.admin_key}"}) as client:
        in_header = client.get("/v1/models", headers={"X-Correlation-ID": b"\xff\xfe\xc3\x28"})
        in_path = client.get("/v1/models/%ff%fe%c3%28")
    assert in_header.status_code < 500, in_header.text[:300]
    assert_clean_4xx(in_path)


def test_100_kb_of_small_headers_is_refused_with_a_431(suite: Suite) -> None:
    headers = {f"X-Many-{i}": "a" * 40 for i in range(100_000 // 50)}
    assert sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEAD_BYTES
    with suite.client(timeout=30) as client:
        try:
            reply = client.get("/health", headers=headers)
        except httpx.RemoteProtocolError:
            pytest.fail("the gateway dropped the connection instead of answering 4xx")
    assert reply.status_code == 431, reply.status_code
    assert reply.json()["error"] == "headers_too_large"


def test_a_100_kb_header_is_refused_with_a_4xx(suite: Suite) -> None:
    with suite.client(timeout=30) as client:
        try:
            reply = client.get("/health", headers={"X-Huge": "a" * 100_000})
        except httpx.RemoteProtocolError:
            pytest.fail("the gateway dropped the connection instead of answering 4xx")
    assert reply.status_code == 431, reply.status_code
    assert reply.json()["error"] == "headers_too_large"


def _tls_socket(suite: Suite) -> ssl.SSLSocket:
    host, port = "127.0.0.1", int(suite.gateway_url.rsplit(":", 1)[1])
    raw = socket.create_connection((host, port), timeout=10)
    return suite.ssl_context().wrap_socket(raw, server_hostname="localhost")


@pytest.fixture
def idle_and_slow(suite: Suite) -> Iterator[list[socket.socket]]:
    """2,000 idle TCP connections and 50 TLS clients sending their headers one byte at a time."""
    host, port = "127.0.0.1", int(suite.gateway_url.rsplit(":", 1)[1])
    with ExitStack() as stack:
        held: list[socket.socket] = []
        for _ in range(2000):
            held.append(stack.enter_context(socket.create_connection((host, port), timeout=10)))
        for _ in range(50):
            slow = stack.enter_context(_tls_socket(suite))
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            held.append(slow)
        yield held


def test_idle_connections_and_slow_headers_do_not_starve_others(suite: Suite, idle_and_slow: list) -> None:
    deadline = time.monotonic() + 20
    answered = 0
    with suite.client(timeout=10) as client:
        for _ in range(20):
            assert time.monotonic() < deadline
            started = time.monotonic()
            reply = client.get("/health")
            assert reply.status_code == 200
            assert time.monotonic() - started < 2.0
            answered += 1
    assert answered == 20
    for slow in idle_and_slow[-50:]:
        try:
            slow.sendall(b"x")  # still trickling; the gateway may have closed it (a header timeout)
        except OSError:
            pass


def test_a_client_that_never_finishes_its_headers_is_cut_off(suite: Suite) -> None:
    slow = _tls_socket(suite)
    try:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        slow.settimeout(HEAD_TIMEOUT_S + 10)
        started = time.monotonic()
        try:
            closed = slow.recv(1024) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        assert closed and time.monotonic() - started < HEAD_TIMEOUT_S + 5
    finally:
        slow.close()
