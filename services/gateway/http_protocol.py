"""uvicorn's httptools protocol with the two bounds it lacks: the size of a request's head (request line
and headers) and the time a client may take to send it.

httptools buffers a header of any size before the application sees it, and uvicorn waits for headers
forever, so one client could hold memory with a 100 MB header or a connection with a byte a minute
(slowloris). Here a head over ``MAX_HEAD_BYTES`` gets ``431`` with the JSON error body and the
connection closes; a connection that has not finished a request's head within ``HEAD_TIMEOUT_S`` of
opening (or of its previous response) is closed. Everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio
import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
