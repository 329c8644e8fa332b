"""uvicorn's httptools protocol with the two bounds it lacks: the size of a request's head (request line
and headers) and the time a client may take to send it.

httptools buffers a header of any size before the application sees it, and uvicorn waits for headers
forever, so one client could hold memory with a 100 MB header or a connection with a byte a minute
(slowloris). Here a head over ``MAX_HEAD_BYTES`` gets ``431`` with the JSON error body and the
connection closes; a connection that has not finished a request's head within ``HEAD_TIMEOUT_S`` of
opening (or of its previous response) is closed.

Everything else is uvicorn's, but for one thing on the way out: a response whose body is known whole
(``Content-Length`` given, one body message) leaves in one ``transport.write``, head and body together
(:class:`UnaryWriteCycle`), which over TLS is one record and one ``send(2)`` instead of two.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.gateway.errors import error_body

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 10.0


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

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a next request already parsed: its head is complete
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            # Kept alive: the next request's head starts now (uvicorn's keep-alive timeout closes an
            # idle connection sooner; this also bounds one that trickles).
            self._in_head = True
            self._start_head_clock()

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
