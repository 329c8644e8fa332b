"""One HTTP/2 stream as an ASGI request/response cycle; the connection that owns it is http2.py.

The same contract as uvicorn's HTTP/1.1 cycle: the app reads the body with ``receive`` (``http.disconnect``
once the client reset the stream, the connection went or the response is complete), ``send`` writes
the response; an exception before the response starts becomes a 500, after it a reset stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

# Connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2): the app's HTTP/1.1 ones are dropped.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})

INTERNAL_ERROR_500 = (
    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
    b"Internal Server Error",
)

log = logging.getLogger("uvicorn.error")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Any]


class StreamOwner(Protocol):
    """What a stream needs from its connection (http2.Http2Protocol)."""

    default_headers: list[tuple[bytes, bytes]]

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None: ...

    async def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None: ...

    def acknowledge(self, stream_id: int, size: int) -> None: ...

    def reset(self, stream_id: int, error_code: int) -> None: ...


class StreamCycle:
    """The request body that arrived, the response sent so far and the app's task for one stream."""

    def __init__(self, owner: StreamOwner, stream_id: int, scope: dict[str, Any]) -> None:
        self.owner = owner
        self.stream_id = stream_id
        self.scope = scope
        self.body = bytearray()
        self.unacknowledged = 0  # flow-controlled bytes received and not yet handed to the app
        self.more_body = True
        self.body_delivered = False  # the last chunk went to the app: receive() now waits for the end
        self.event = asyncio.Event()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.started = False  # the app has been called (a stream reset before that never runs)
        self.task: asyncio.Task[None] | None = None

    # Fed by the connection.
    def feed(self, data: bytes, flow_controlled_length: int) -> None:
        self.body += data
        self.unacknowledged += flow_controlled_length
        self.event.set()

    def end(self) -> None:
        self.more_body = False
        self.event.set()

    def disconnect(self) -> None:
        self.disconnected = True
        self.event.set()

    # The ASGI side.
    async def run(self, app: ASGIApp) -> None:
        """Run ``app`` for this stream as uvicorn's cycle does (the connection learns of its end from the task)."""
        self.started = True
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # as uvicorn: what the app raised is logged, never the connection's end
            if not self.disconnected:
                log.error("Exception in ASGI application\n", exc_info=exc)
                if not self.response_started:
                    await self._send_500()
        finally:
            if not self.response_complete and not self.disconnected:
                # Started and not finished (or never started and the 500 failed): the client must not wait.
                self.owner.reset(self.stream_id, 2)  # INTERNAL_ERROR

    async def _send_500(self) -> None:
        headers, body = INTERNAL_ERROR_500
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def receive(self) -> dict[str, Any]:
        """The next part of the request body; ``http.disconnect`` once there is nothing more to wait for."""
        while not (self.disconnected or self.response_complete) and (
            self.body_delivered or (not self.body and self.more_body)
        ):
            self.event.clear()
            await self.event.wait()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = bytes(self.body)
        self.body.clear()
        if self.unacknowledged:
            # Only what the app has taken is credited back: a client can have at most a window's worth
            # of body buffered here per stream.
            self.owner.acknowledge(self.stream_id, self.unacknowledged)
            self.unacknowledged = 0
        self.body_delivered = not self.more_body
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        """Write the response's head or a part of its body (waiting for the peer's flow-control window)."""
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.response_started = True
            headers = [(b":status", b"%d" % message["status"]), *self.owner.default_headers]
            for name, value in message.get("headers", ()):
                name = name.lower()
                if name not in HOP_BY_HOP:
                    headers.append((name, value))
            self.owner.send_headers(self.stream_id, headers, end_stream=False)
            return
        if self.response_complete or kind != "http.response.body":
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        more_body = message.get("more_body", False)
        body = b"" if self.scope["method"] == "HEAD" else message.get("body", b"")
        if body or not more_body:
            await self.owner.send_data(self.stream_id, body, end_stream=not more_body)
        if not more_body and not self.disconnected:
            self.response_complete = True
            self.event.set()
