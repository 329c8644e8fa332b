"""HTTP/2 at the gateway: an asyncio protocol on the ``h2`` library in front of the same ASGI app.

uvicorn speaks only HTTP/1.1. Rather than a second server (hypercorn's HTTP/1.1 is h11, pure Python,
and would cost every HTTP/1.1 request more CPU than httptools does), the gateway keeps uvicorn and its
listener and hands a connection to :class:`Http2Protocol` when TLS negotiated ``h2`` in ALPN
(:class:`AlpnHttpProtocol`); everything else stays on uvicorn's httptools protocol with our bounds
(http_protocol.py). The same app, middleware and uvicorn server state serve both: security headers,
correlation ids, error envelopes, ``GOBLIN_GATEWAY_MAX_CONNECTIONS`` and graceful shutdown included.

The bounds HTTP/1.1 has, in HTTP/2 terms:
- request head: SETTINGS_MAX_HEADER_LIST_SIZE advertises ``MAX_HEAD_BYTES``; a larger one is answered
  431 with the JSON error body (RFC 9113 10.5.1), one past ``HARD_HEADER_LIST_BYTES`` (decoded) ends the
  connection (GOAWAY ENHANCE_YOUR_CALM), as do more than h2's 64 CONTINUATION frames for one head;
- head and idle time: a connection with no stream open is closed (GOAWAY) ``HEAD_TIMEOUT_S`` after it
  opened and uvicorn's keep-alive timeout after its last response, however slowly a header trickles in
  (the DATA of an upload answered early and still being drained restarts keep-alive, as in HTTP/1.1);
- streams: SETTINGS_MAX_CONCURRENT_STREAMS ``MAX_CONCURRENT_STREAMS`` (h2 refuses a stream past it);
  a client resetting streams to start more requests than that (CVE-2023-44487, "rapid reset") is cut
  off, and a stream reset before its request started never runs;
- control frames (PING, SETTINGS, PRIORITY, RST_STREAM, unknown, empty DATA): a token bucket per
  connection, ``CONTROL_BURST`` deep, refilled at ``CONTROL_PER_S``; past it, GOAWAY ENHANCE_YOUR_CALM;
- bodies: flow control credits back only what the app has read, so a connection buffers at most
  ``CONNECTION_WINDOW`` bytes of request bodies; the body limits themselves are the app's (413).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from services.gateway.http2_stream import StreamCycle
from services.gateway.http_protocol import (
    HEAD_TIMEOUT_S,
    HEAD_TOO_LARGE_BODY,
    IDLE_RECHECK_S,
    IDLE_RECHECKS,
    MAX_HEAD_BYTES,
    BoundedHttpToolsProtocol,
    unread,
)

ALPN_PROTOCOLS = ["h2", "http/1.1"]
MAX_CONCURRENT_STREAMS = 100
HARD_HEADER_LIST_BYTES = 256 * 1024
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
CONTROL_BURST = 200
CONTROL_PER_S = 50.0
# RFC 7541 4.1: a header field's size is its name's and value's lengths plus 32.
FIELD_OVERHEAD = 32

log = logging.getLogger("uvicorn.error")


class _Connection(h2.connection.H2Connection):
    """h2's connection, but the HPACK decoder's hard limit stays ``HARD_HEADER_LIST_BYTES`` once our
    SETTINGS are acknowledged (h2 would lower it to the advertised size and end the connection, where
    a head between the two is answered 431 instead)."""

    def _local_settings_acked(self) -> Any:
        changes = super()._local_settings_acked()
        self.decoder.max_header_list_size = HARD_HEADER_LIST_BYTES
        return changes


async def head_too_large(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The 431 HTTP/1.1 answers for a head over ``MAX_HEAD_BYTES``, as an ASGI app for one stream."""
    length = b"%d" % len(HEAD_TOO_LARGE_BODY)
    headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": HEAD_TOO_LARGE_BODY})


class Http2Protocol(asyncio.Protocol):
    """One HTTP/2 connection: frames in and out through ``h2``, one :class:`StreamCycle` task per request."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop):
        self.config = config
        self.app = config.loaded_app
        self.loop = loop
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.app_state = app_state
        self.root_path = config.root_path
        self.conn = _Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD_BYTES,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.conn.decoder.max_header_list_size = HARD_HEADER_LIST_BYTES
        self.streams: dict[int, StreamCycle] = {}
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.window_opened = asyncio.Event()
        self.closing = False  # GOAWAY sent: no new streams, close once the last one is answered
        self.idle_timer: asyncio.TimerHandle | None = None
        self.control_tokens = float(CONTROL_BURST)
        self.control_stamp = 0.0
        self.flush_scheduled = False
        self.request_priority: h2.events.PriorityUpdated | None = None

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        # uvicorn refreshes its date header every second: read it per response.
        return self.server_state.default_headers

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)
        self.control_stamp = self.loop.time()
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        self._arm_idle(HEAD_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._disarm_idle()
        for stream in self.streams.values():
            stream.disconnect()
        self.writable.set()
        self.window_opened.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # A malformed frame, an HPACK bomb, too many CONTINUATIONs or streams: the connection ends.
            self.abort(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR))
            return
        for event in events:
            if self.transport.is_closing():
                return
            self._dispatch(event)
        self.flush()

    def eof_received(self) -> None:
        pass

    # Frames in
    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.response_complete:
                stream.feed(event.data, event.flow_controlled_length)
            else:  # nobody will read it: credit the connection's window back at once
                self.acknowledge(event.stream_id, event.flow_controlled_length)
                if not self.streams:
                    # Answered early (a 413, say) and the client still uploading: not idle, as an
                    # HTTP/1.1 connection draining a body is not (httpx reads only once it has sent all).
                    self._arm_idle(self.config.timeout_keep_alive)
            if not event.data and not event.stream_ended:
                self._charge()
        elif isinstance(event, h2.events.RequestReceived):
            # A request's own priority (HEADERS with PRIORITY, as browsers send) also arrives as a
            # PriorityUpdated: that one is not a control frame to charge.
            self.request_priority = event.priority_updated
            self._on_request(event.stream_id, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.end()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event.stream_id)
            self._charge()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_opened.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.window_opened.set()  # INITIAL_WINDOW_SIZE may have grown every stream's window
            self._charge()
        elif isinstance(event, h2.events.PriorityUpdated):
            if event is not self.request_priority:
                self._charge()
        elif isinstance(event, (h2.events.PingReceived, h2.events.UnknownFrameReceived)):
            self._charge()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client's GOAWAY: no new streams. Without an error, what it has in flight is answered.
            self.closing = True
            if event.error_code != ErrorCodes.NO_ERROR or not self.streams:
                self.abort(ErrorCodes.NO_ERROR)

    def _on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.closing:
            self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS and (
            sum(not s.response_complete for s in self.streams.values()) >= MAX_CONCURRENT_STREAMS
        ):
            # h2 allows MAX_CONCURRENT_STREAMS open streams; more unanswered requests than that means
            # streams reset to make room for new ones (rapid reset): this client has had its share.
            self.abort(ErrorCodes.ENHANCE_YOUR_CALM)
            return
        scope, head_bytes = self._scope(headers)
        if scope is None:
            self.reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        limit = self.config.limit_concurrency
        if head_bytes > MAX_HEAD_BYTES:
            app = head_too_large
        elif limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable  # what uvicorn answers an HTTP/1.1 request past the same limit
            log.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        self._disarm_idle()
        stream = StreamCycle(self, stream_id, scope)
        self.streams[stream_id] = stream
        task = self.loop.create_task(stream.run(app))
        stream.task = task
        task.add_done_callback(lambda _: self.stream_finished(stream))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _scope(self, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any] | None, int]:
        """The ASGI scope of a request's head (h2 has checked its pseudo-headers), and the head's size."""
        method = path = authority = None
        fields: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + FIELD_OVERHEAD
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
            elif name == b"cookie":
                cookies.append(value)  # HTTP/2 may split cookies (RFC 9113 8.2.3): the app expects one
            else:
                fields.append((name, value))
        if path is None or method is None:
            return None, size  # CONNECT has no :path: the gateway serves none
        if cookies:
            fields.append((b"cookie", b"; ".join(cookies)))
        if authority is not None and not any(name == b"host" for name, _ in fields):
            fields.insert(0, (b"host", authority))
        raw_path, _, query = path.partition(b"?")
        try:
            text_path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            return None, size
        if "%" in text_path:
            text_path = urllib.parse.unquote(text_path)
        scope = {
            "type": "http",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": "2",
            "server": self.server,
            "client": self.client,
            "scheme": "https",
            "method": method.decode("ascii", "replace"),
            "root_path": self.root_path,
            "path": self.root_path + text_path,
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": query,
            "headers": fields,
            "state": self.app_state.copy(),
        }
        return scope, size

    def _on_reset(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.disconnect()
        self.window_opened.set()  # a send waiting for this stream's window must see the reset
        if not stream.started:
            stream.task.cancel()  # reset before it began: the app never sees this request

    def _charge(self) -> None:
        now = self.loop.time()
        self.control_tokens = min(CONTROL_BURST, self.control_tokens + (now - self.control_stamp) * CONTROL_PER_S)
        self.control_stamp = now
        self.control_tokens -= 1
        if self.control_tokens < 0:
            self.abort(ErrorCodes.ENHANCE_YOUR_CALM)

    # Frames out (the StreamOwner interface of http2_stream.py)
    def flush(self) -> None:
        """Write what h2 has queued, now."""
        if data := self.conn.data_to_send():
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Write what h2 has queued once the running task yields: a response's HEADERS and DATA, and the
        window updates of the requests read meanwhile, leave in one TLS write instead of one each."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self.flush_scheduled = False
        if not self.transport.is_closing():
            self.flush()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            self._lost_stream(stream_id)
            return
        self.flush_soon()

    async def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send ``data`` on the stream as the peer's windows and the socket's buffer allow."""
        stream = self.streams[stream_id]
        offset, total = 0, len(data)
        while not stream.disconnected:
            if not self.writable.is_set():
                await self.writable.wait()
                continue
            try:
                window = self.conn.local_flow_control_window(stream_id)
                size = min(total - offset, window, self.conn.max_outbound_frame_size)
                if size <= 0 and offset < total:
                    self.window_opened.clear()
                    await self.window_opened.wait()
                    continue
                final = offset + size == total
                self.conn.send_data(stream_id, data[offset : offset + size], end_stream=end_stream and final)
            except h2.exceptions.StreamClosedError:
                self._lost_stream(stream_id)
                return
            offset += size
            if final:
                self.flush_soon()
                return
            self.flush()  # more to come: the socket's buffer decides when (pause_writing)

    def acknowledge(self, stream_id: int, size: int) -> None:
        self.conn.acknowledge_received_data(size, stream_id)
        self.flush_soon()

    def reset(self, stream_id: int, error_code: int) -> None:
        try:
            self.conn.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass
        self.flush()

    def stream_finished(self, stream: StreamCycle) -> None:
        """The app is done with ``stream``: free what it held, and close or idle the connection."""
        self.streams.pop(stream.stream_id, None)
        self.server_state.total_requests += 1  # as uvicorn counts them (--limit-max-requests)
        if self.transport.is_closing():
            return
        if stream.unacknowledged:
            # Answered without reading it all: the rest of the body is credited back and dropped as it
            # comes, as HTTP/1.1 drops it (RST_STREAM NO_ERROR, RFC 9113 8.1, leaves some clients, httpx
            # among them, waiting on a window that never opens).
            self.conn.acknowledge_received_data(stream.unacknowledged, stream.stream_id)
        if not self.streams:
            if self.closing:
                self.flush()
                self.transport.close()
                return
            self.flush_soon()
            self._arm_idle(self.config.timeout_keep_alive)
        else:
            self.flush_soon()

    def _lost_stream(self, stream_id: int) -> None:
        if (stream := self.streams.get(stream_id)) is not None:
            stream.disconnect()
            self.window_opened.set()

    # The connection's end
    def _goaway(self, error_code: int) -> None:
        # Written by hand: after h2's own GOAWAY it refuses every frame, and the streams already
        # accepted still have their answers to send.
        frame = GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id, error_code=error_code)
        self.transport.write(frame.serialize())

    def abort(self, error_code: int) -> None:
        """GOAWAY with ``error_code`` and close now; the streams' apps see a disconnect."""
        if not self.transport.is_closing():
            # What h2 queued meanwhile is dropped: a flood's PING and SETTINGS acknowledgements among it.
            self.conn.data_to_send()
            self._goaway(error_code)
            self.transport.close()
            # Now, not when TLS has finished closing (connection_lost): the apps stop writing at once.
            for stream in self.streams.values():
                stream.disconnect()
            self.window_opened.set()

    def shutdown(self, rechecks: int = IDLE_RECHECKS) -> None:
        """uvicorn's graceful shutdown: GOAWAY, the streams already accepted are answered, then close.
        Frames already in the socket, unread, are read first: a request the client sent as the drain
        began is accepted and answered, rather than left above the GOAWAY's last stream id (a client
        retries those elsewhere, but httpx only once the connection has had a stream: not a first one)."""
        if self.closing or self.transport.is_closing():
            return
        if rechecks > 0 and unread(self.transport):
            self.loop.call_later(IDLE_RECHECK_S, self.shutdown, rechecks - 1)
            return
        self.closing = True
        self.flush()
        self._goaway(ErrorCodes.NO_ERROR)
        if not self.streams:
            self.transport.close()

    def _arm_idle(self, seconds: float) -> None:
        self._disarm_idle()
        self.idle_timer = self.loop.call_later(seconds, self._idle_timed_out)

    def _disarm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_timed_out(self) -> None:
        self.idle_timer = None
        if not self.streams and not self.transport.is_closing():
            self.flush()
            self._goaway(ErrorCodes.NO_ERROR)
            self.transport.close()


class AlpnHttpProtocol(BoundedHttpToolsProtocol):
    """The gateway's protocol: HTTP/2 when TLS negotiated ``h2``, else :class:`BoundedHttpToolsProtocol`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            protocol = Http2Protocol(self.config, self.server_state, self.app_state, self.loop)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        super().connection_made(transport)
