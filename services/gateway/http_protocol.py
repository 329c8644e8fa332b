"""uvicorn's httptools protocol with the two bounds it lacks: the size of a request's head (request line
and headers) and the time a client may take to send it.

httptools buffers a header of any size before the application sees it, and uvicorn waits for headers
forever, so one client could hold memory with a 100 MB header or a connection with a byte a minute
(slowloris). Here a head over ``MAX_HEAD_BYTES`` gets ``431`` with the JSON error body and the
connection closes; a connection that has not finished a request's head within ``HEAD_TIMEOUT_S`` of
opening (or of its previous response) is closed.

Graceful shutdown (uvicorn calls :meth:`BoundedHttpToolsProtocol.shutdown` on every connection) drains as
nginx or Go's ``Server.Shutdown`` do: a request already received is answered, with ``Connection: close``;
a connection is closed at once only when it is really idle. uvicorn's own closes every connection
between requests, with bytes of the next one possibly already in its socket, unread (the client, having
sent on its kept-alive connection, then sees it closed with no answer and cannot tell whether the
request ran). Here a connection with a request begun, or with unread bytes, is left to answer it.

Everything else is uvicorn's, but for one thing on the way out: a response whose body is known whole
(``Content-Length`` given, one body message) leaves in one ``transport.write``, head and body together
(:class:`UnaryWriteCycle`), which over TLS is one record and one ``send(2)`` instead of two.
"""

from __future__ import annotations

import asyncio
import json
import select
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.gateway.errors import error_body

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 10.0
# A connection about to be closed as idle (draining, or its keep-alive time up) with unread bytes is
# looked at again this often (the loop reads them meanwhile), this many times at most before it is
# closed anyway (unread bytes that never make a request: the client's end of file, say).
IDLE_RECHECK_S = 0.01
IDLE_RECHECKS = 100


# The gateway's one error shape; no request exists yet, so its correlation id is empty. HTTP/2 answers
# an oversized head with the same body (http2.py).
HEAD_TOO_LARGE_BODY = json.dumps(
    error_body("headers_too_large", f"the request head is over {MAX_HEAD_BYTES} bytes")
).encode()
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(HEAD_TOO_LARGE_BODY)
) + HEAD_TOO_LARGE_BODY


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops and re-raises it as an HttpParserCallbackError."""


class _HeadCapture:
    """Stands in for the transport while uvicorn writes a response's head, so the head can be held."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class UnaryWriteCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing a complete response in one ``transport.write``.

    uvicorn writes the status line and headers when ``http.response.start`` arrives and the body when
    ``http.response.body`` does: two writes, so two TLS records and two syscalls per answer. Here the
    head uvicorn builds (every check and default header its own) is held when the response declares its
    ``Content-Length``, and leaves with the first body message if that message completes the body; the
    bytes on the wire are the same. Anything else (a streaming response with chunked encoding, a body in
    several messages, a HEAD request, a body whose size disagrees with its header) writes the head as
    uvicorn does and lets uvicorn carry on, so streaming responses are untouched.
    """

    _held_head: bytes | None = None

    async def send(self, message: Any) -> None:
        head = self._held_head
        if head is None:
            if self.response_started or message["type"] != "http.response.start":
                return await super().send(message)
            transport, capture = self.transport, _HeadCapture()
            self.transport = capture  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            if self.chunked_encoding or self.scope["method"] == "HEAD" or self.disconnected:
                if capture.data:
                    transport.write(capture.data)
            else:
                self._held_head = capture.data
            return None
        # The message after a held head.
        self._held_head = None
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return None
        body = message.get("body", b"") if message["type"] == "http.response.body" else None
        if body is None or message.get("more_body", False) or len(body) != self.expected_content_length:
            self.transport.write(head)
            return await super().send(message)
        # uvicorn's completion of a response, with the head and the body in one write.
        self.transport.write(head + body if body else head)
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return None


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a bound on the request head's size and on the time to send it."""

    _head_bytes = 0
    _head_too_large = False
    _in_head = True
    _head_timer: asyncio.TimerHandle | None = None
    _draining = False
    # Requests begun (their first byte parsed) and answered on this connection: idle when equal.
    _begun = 0
    _answered = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but a head over the limit is answered 431 in JSON rather than a bare 400.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._head_too_large:
                self._stop_head_clock()
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn builds its own cycle in on_headers_complete; every cycle, pipelined ones too, starts
        # here before its task first runs, so its class is switched to the one that writes once.
        cycle.__class__ = UnaryWriteCycle
        super()._start_asgi_task(cycle, app)

    def _count_head(self, size: int) -> None:
        # httptools hands over a header once it has it whole: what it buffers meanwhile is bounded by
        # one read from the socket on top of this limit.
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_clock()
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # received during the drain: answered, then the connection closes

    def on_response_complete(self) -> None:
        self._answered += 1
        pipelined = bool(self.pipeline)  # a next request already parsed: its head is complete
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            # Kept alive: the next request's head starts now (uvicorn's keep-alive timeout closes an
            # idle connection sooner; this also bounds one that trickles).
            self._in_head = True
            self._start_head_clock()

    def shutdown(self) -> None:
        """Graceful shutdown: the request in progress, or one whose bytes have come, is answered with
        ``Connection: close``; a connection with nothing begun and nothing unread is closed now."""
        if self._draining:
            return  # uvicorn's shutdown may ask again
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # uvicorn's: its answer says Connection: close, then closes
            return
        self._close_when_idle(IDLE_RECHECKS)

    def timeout_keep_alive_handler(self) -> None:
        # uvicorn's closes at once: a request that came just as the time was up would go unanswered.
        self._close_when_idle(IDLE_RECHECKS)

    def _close_when_idle(self, rechecks: int, begun: int | None = None) -> None:
        if self.transport.is_closing():
            return
        if self._begun > self._answered or self.pipeline:
            return  # a request begun: on_headers_complete makes its answer the last one
        if begun is not None and begun != self._begun:
            return  # a request came and was answered meanwhile: its answer decided (close, or keep-alive)
        if rechecks > 0 and unread(self.transport):
            # Bytes in the socket the loop has not read yet: a request sent just now. Look again once
            # the loop has read them (data_received comes first).
            self.loop.call_later(IDLE_RECHECK_S, self._close_when_idle, rechecks - 1, self._begun)
            return
        self.transport.close()

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def unread(transport: asyncio.BaseTransport) -> bool:
    """Whether the transport's socket has bytes (or an end of file) the loop has not read yet."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()  # not select(): a busy gateway's descriptors go past FD_SETSIZE
    try:
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile
        return False
