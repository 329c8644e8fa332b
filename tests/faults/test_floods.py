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
from services.gateway.http_protocol import HEAD_TIMEOUT_S

pytestmark = pytest.mark.faults

# The chat route's own limit (GOBLIN_MAX_CHAT_BODY_BYTES' default: images travel as data: URLs).
MAX_BODY = GatewaySettings.model_fields["max_chat_body_bytes"].default


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


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_a_400(suite: Suite, depth: int) -> None:
    body = b'{"model": "local", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    assert_clean_4xx(post_raw(suite, body))


def test_invalid_utf8_is_a_400(suite: Suite) -> None:
    body = b'{"model": "local", "messages": [{"role": "user", "content": "\xff\xfe\xc3\x28"}]}'
    assert_clean_4xx(post_raw(suite, body))


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
