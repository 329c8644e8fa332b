"""HTTP/1.1 keep-alive at the gateway's graceful shutdown (services/gateway/http_protocol.py): a request
the server has received is answered (``Connection: close``), even when its bytes were still unread in the
socket when the drain began; an idle connection is closed. The gateway's own uvicorn configuration (real
TLS) in front of a small app, and a raw HTTP/1.1 client that sends its bytes exactly when told."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.unit.gateway.test_http_protocol_h2_raw import serving


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/slow answers after 0.5 s, anything else at once, with its path."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    body = json.dumps({"path": scope["path"]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def http_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode()


class RawHttp1:
    """An HTTP/1.1 client over TLS on one connection, reading answers by their content-length."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        context.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # reset, or TLS torn down without close_notify
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def response(self, timeout_s: float = 10) -> tuple[int, dict[str, str], bytes] | None:
        """The next answer (status, headers, body), or None if the connection ended without one."""
        deadline = time.monotonic() + timeout_s
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                return None
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            if not self._fill(deadline):
                return None
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return int(lines[0].split()[1]), headers, rest[:length]

    def closed_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.eof and time.monotonic() < deadline:
            self._fill(deadline)
        return self.eof

    def close(self) -> None:
        self.sock.close()


def on_server_loop(server: uvicorn.Server, action: Any) -> None:
    """Run ``action`` in one callback on the server's event loop (nothing is read meanwhile) and wait."""
    protocol = next(iter(server.server_state.connections))
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)
        finally:
            done.set()

    protocol.loop.call_soon_threadsafe(run)
    assert done.wait(10), "the server's loop did not run the callback"
    if failure:
        raise failure[0]


def begin_shutdown(server: uvicorn.Server) -> None:
    """What uvicorn's ``Server.shutdown`` does first, at once: every connection is told to drain."""
    for connection in list(server.server_state.connections):
        connection.shutdown()


Connection = tuple[uvicorn.Server, RawHttp1]


@pytest.fixture(params=["uvloop", "asyncio"])
def connection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """A served app (on the gateway's uvloop, and on asyncio's loop) and a connection that has had one
    answer and is idle, kept alive."""
    with serving(app, tmp_path / "tls", loop=request.param) as (server, port, context):
        client = RawHttp1(port, context)
        try:
            client.sock.sendall(http_request("/first"))
            answer = client.response()
            assert answer is not None and answer[0] == 200
            assert answer[1].get("connection") != "close"
            yield server, client
        finally:
            client.close()


def test_a_request_unread_when_the_drain_begins_is_answered_with_connection_close(connection: Connection) -> None:
    # The keep-alive race: the client sends on its idle connection as the server starts to drain. Its
    # bytes are in the server's socket, not yet read, when every connection is told to shut down.
    server, client = connection

    def race() -> None:
        client.sock.sendall(http_request("/raced"))
        begin_shutdown(server)

    on_server_loop(server, race)
    answer = client.response()
    assert answer is not None, "the connection was closed with the request unanswered"
    status, headers, body = answer
    assert status == 200 and json.loads(body) == {"path": "/raced"}
    assert headers.get("connection") == "close"  # the client stops reusing it
    assert client.closed_within(10)


def test_an_idle_connection_is_closed_when_the_drain_begins(connection: Connection) -> None:
    server, client = connection
    on_server_loop(server, lambda: begin_shutdown(server))
    assert client.closed_within(10)
    assert client.buffer == b""  # closed without a word: nothing was asked


def test_a_partial_head_at_the_drain_is_answered_once_complete(connection: Connection) -> None:
    server, client = connection
    head = http_request("/partial")
    client.sock.sendall(head[:10])
    time.sleep(0.2)  # read by the server or not: either way the request is begun, not idle
    on_server_loop(server, lambda: begin_shutdown(server))
    client.sock.sendall(head[10:])
    answer = client.response()
    assert answer is not None and answer[0] == 200 and json.loads(answer[2]) == {"path": "/partial"}
    assert answer[1].get("connection") == "close"
    assert client.closed_within(10)


def test_the_request_in_flight_is_answered_with_connection_close(connection: Connection) -> None:
    server, client = connection
    client.sock.sendall(http_request("/slow"))
    time.sleep(0.2)
    # The real shutdown (uvicorn's, as on SIGTERM) calls shutdown() again: it must be idempotent.
    on_server_loop(server, lambda: begin_shutdown(server))
    server.should_exit = True
    answer = client.response()
    assert answer is not None and answer[0] == 200 and json.loads(answer[2]) == {"path": "/slow"}
    assert answer[1].get("connection") == "close"
    assert client.closed_within(10)


def test_a_request_unread_when_keep_alive_times_out_is_answered(connection: Connection) -> None:
    # The same race at the keep-alive timeout: the connection stays alive, and serves the next one.
    server, client = connection

    def race() -> None:
        client.sock.sendall(http_request("/late"))
        for protocol in list(server.server_state.connections):
            protocol.timeout_keep_alive_handler()

    on_server_loop(server, race)
    answer = client.response()
    assert answer is not None and answer[0] == 200 and json.loads(answer[2]) == {"path": "/late"}
    assert answer[1].get("connection") != "close"
    time.sleep(0.2)  # past the timeout's second looks: kept alive all the same
    client.sock.sendall(http_request("/again"))
    answer = client.response()
    assert answer is not None and json.loads(answer[2]) == {"path": "/again"}
