"""The gateway's HTTP/1.1 protocol writes a complete response (head and body) in one transport write,
and the bytes on the wire are exactly uvicorn's: each case is served by uvicorn's own protocol and by
ours over a recording transport, and the two byte streams compared. Over HTTP/2 a unary answer's
HEADERS and DATA frames leave in one write as well."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hyperframe.frame import DataFrame, Frame, HeadersFrame
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services.gateway import http2
from services.gateway.http_protocol import BoundedHttpToolsProtocol
from tests.unit.gateway.test_http_protocol_h2_raw import RawH2, serving

ANSWER = {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "héllo"}}]}


async def answer(request: Request) -> Response:
    await request.body()
    return JSONResponse(ANSWER)


async def refused(request: Request) -> Response:
    return JSONResponse({"error": {"code": "invalid_request", "message": "no"}}, status_code=400)


async def no_content(request: Request) -> Response:
    return Response(status_code=204)


async def not_modified(request: Request) -> Response:
    return Response(status_code=304, headers={"etag": '"v1"'})


async def streamed(request: Request) -> Response:
    async def chunks() -> Any:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def two_parts(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "body": b"def", "more_body": False})


async def too_short(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"abc", "more_body": False})


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/two-parts":
        await two_parts(scope, receive, send)
    elif scope["path"] == "/too-short":
        await too_short(scope, receive, send)
    else:
        await STARLETTE(scope, receive, send)


STARLETTE = Starlette(
    routes=[
        Route("/v1/chat/completions", answer, methods=["POST", "GET", "HEAD"]),
        Route("/refused", refused),
        Route("/no-content", no_content),
        Route("/not-modified", not_modified),
        Route("/stream", streamed),
    ]
)


class RecordingTransport(asyncio.Transport):
    """What the protocol writes, one entry per ``write``; closing is recorded, not done."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8443), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def serve(protocol_class: type[HttpToolsProtocol], *requests: bytes) -> RecordingTransport:
    """``requests`` fed one after the other to a connection of ``protocol_class`` (each once the previous
    response is complete); the transport with what was written."""
    config = Config(app=raw, lifespan="off", access_log=False, log_config=None)
    state = ServerState()
    state.default_headers = [(b"server", b"goblin")]  # no date header: the two runs must agree
    protocol = protocol_class(config, state, {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for request in requests:
        answered = state.total_requests
        protocol.data_received(request)
        for _ in range(200):
            if state.total_requests > answered or transport.closed:
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)
    for task in list(state.tasks):
        await task
    closed_by_server = transport.closed
    protocol.connection_lost(None)  # stops the connection's timers (and closes the transport)
    transport.closed = closed_by_server
    return transport


def post(path: str = "/v1/chat/completions", extra: bytes = b"") -> bytes:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    return b"POST %s HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def get(path: str, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nhost: gw\r\n%s\r\n" % (method, path.encode(), extra)


async def compare(*requests: bytes) -> tuple[RecordingTransport, RecordingTransport]:
    before = await serve(HttpToolsProtocol, *requests)
    after = await serve(BoundedHttpToolsProtocol, *requests)
    assert b"".join(after.writes) == b"".join(before.writes)
    assert after.closed == before.closed
    return before, after


async def test_a_unary_answer_leaves_in_one_write_with_the_same_bytes() -> None:
    before, after = await compare(post())
    assert len(before.writes) == 2  # uvicorn: head, then body
    assert len(after.writes) == 1
    assert after.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert after.writes[0].endswith('"héllo"}}]}'.encode())


async def test_an_error_answer_leaves_in_one_write() -> None:
    _, after = await compare(get("/refused"))
    assert len(after.writes) == 1
    assert after.writes[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.parametrize("path", ["/no-content", "/not-modified"])
async def test_a_response_without_body_is_its_head_alone(path: str) -> None:
    _, after = await compare(get(path))
    assert len(after.writes) == 1
    assert after.writes[0].endswith(b"\r\n\r\n")


async def test_a_head_request_is_answered_with_the_head_only() -> None:
    _, after = await compare(get("/v1/chat/completions", method=b"HEAD"))
    assert len(after.writes) == 1
    assert after.writes[0].endswith(b"\r\n\r\n")
    assert b"content-length: " in after.writes[0]


async def test_two_requests_on_one_kept_alive_connection() -> None:
    _, after = await compare(post(), get("/refused"))
    assert len(after.writes) == 2
    assert after.writes[0].startswith(b"HTTP/1.1 200 OK") and after.writes[1].startswith(b"HTTP/1.1 400")
    assert not after.closed


async def test_connection_close_is_honoured_after_the_one_write() -> None:
    _, after = await compare(post(extra=b"connection: close\r\n"))
    assert len(after.writes) == 1 and after.closed
    assert b"connection: close\r\n" in after.writes[0]


async def test_a_streaming_response_is_written_as_uvicorn_writes_it() -> None:
    before, after = await compare(get("/stream"))
    assert after.writes == before.writes
    assert b"transfer-encoding: chunked" in after.writes[0]


async def test_a_body_in_several_messages_is_written_as_uvicorn_writes_it() -> None:
    before, after = await compare(get("/two-parts"))
    assert after.writes == before.writes == [after.writes[0], b"abc", b"def"]


async def test_a_body_shorter_than_its_length_still_fails_as_in_uvicorn() -> None:
    before, after = await compare(get("/too-short"))
    assert after.writes == before.writes
    assert after.closed


def frames_of(data: bytes) -> list[Frame]:
    """The HTTP/2 frames in one write of the server's."""
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def test_over_http2_a_unary_answers_headers_and_data_leave_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []

    def recording_flush(self: http2.Http2Protocol) -> None:
        if data := self.conn.data_to_send():
            writes.append(data)
            self.transport.write(data)

    monkeypatch.setattr(http2.Http2Protocol, "flush", recording_flush)
    with serving(STARLETTE, tmp_path) as (_, port, context):
        raw = RawH2(port, context)
        try:
            raw.send(raw.request(1, "/v1/chat/completions"))
            assert any(isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in raw.frames(timeout_s=10))
        finally:
            raw.close()
    answer = [frames_of(data) for data in writes if any(f.stream_id == 1 for f in frames_of(data))]
    assert len(answer) == 1, answer  # the HEADERS and the whole DATA, one write
    kinds = [type(f) for f in answer[0] if f.stream_id == 1]
    assert kinds == [HeadersFrame, DataFrame]
