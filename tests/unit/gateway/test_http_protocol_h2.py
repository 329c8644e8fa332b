"""HTTP/2 at the gateway's protocol layer (services/gateway/http2.py): the gateway's own uvicorn
configuration (real TLS, ALPN) in front of a small ASGI app, an h2 client (httpx ``http2=True``) and a
raw frame-by-frame one for what a client library would not send."""

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

import httpx
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from services.gateway import http2
from services.gateway.http_protocol import MAX_HEAD_BYTES
from tests.unit.gateway.test_http_protocol_h2_raw import RawH2, serving


class App:
    """Routes: /echo (the request as JSON), /upload (reads the body, answers its size), /ignore (answers
    without reading the body), /sse (three events), /slow (answers after 1 s), /boom (raises)."""

    def __init__(self) -> None:
        self.calls = 0
        self.disconnects = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        with self.lock:
            self.calls += 1
        path = scope["path"]
        if path == "/upload":
            size, more = 0, True
            while more:
                message = await receive()
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
            await self.answer(send, {"size": size})
        elif path == "/sse":
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for n in range(3):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})
                await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            await asyncio.sleep(1.0)
            await self.answer(send, {"slow": True})
        elif path == "/hold":
            # Waits for the client to go away, as a streaming response does.
            while (await receive())["type"] != "http.disconnect":
                pass
            with self.lock:
                self.disconnects += 1
        elif path == "/big":
            await self.answer(send, {"big": "b" * 100_000})
        elif path == "/boom":
            raise RuntimeError("boom")
        else:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            body = {"version": scope["http_version"], "path": path, "query": scope["query_string"].decode()}
            await self.answer(send, {**body, "headers": headers, "client": list(scope["client"])})

    @staticmethod
    async def answer(send: Any, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"keep-alive")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[App, int, Any]]:
    app = App()
    with serving(app, tmp_path / "tls") as (_server, port, context):
        yield app, port, context


def h2_client(port: int, context: Any, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, http2=True, timeout=20, **kwargs)


def test_an_h2_client_gets_http2_and_an_http11_client_http11(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    with h2_client(port, context) as client:
        reply = client.get("/echo/a%20b?x=1", headers={"X-Thing": "v"})
    assert reply.http_version == "HTTP/2"
    seen = reply.json()
    assert seen["version"] == "2" and seen["path"] == "/echo/a b" and seen["query"] == "x=1"
    assert seen["headers"]["host"] == f"127.0.0.1:{port}"
    assert seen["headers"]["x-thing"] == "v"
    assert "connection" not in reply.headers  # the app's HTTP/1.1-only header is not sent over HTTP/2
    assert "date" in reply.headers
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=20) as client:
        reply = client.get("/echo")
    assert reply.http_version == "HTTP/1.1" and reply.json()["version"] == "1.1"


def test_tls_is_1_2_or_newer_with_aead_suites_and_offers_h2_first(served: tuple[App, int, Any], tmp_path: Path) -> None:
    _app, port, _context = served

    def handshake(**settings: Any) -> tuple[str | None, str | None]:
        context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        context.maximum_version = settings.get("maximum", ssl.TLSVersion.MAXIMUM_SUPPORTED)
        if "ciphers" in settings:
            context.set_ciphers(settings["ciphers"])
        context.set_alpn_protocols(settings.get("alpn", ["h2", "http/1.1"]))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version(), tls.selected_alpn_protocol()

    assert handshake() == ("TLSv1.3", "h2")
    assert handshake(maximum=ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", "h2")
    assert handshake(alpn=["http/1.1"]) == ("TLSv1.3", "http/1.1")
    with pytest.raises(ssl.SSLError):  # CBC with SHA-1 MACs only: no suite in common
        handshake(maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA")


def test_split_cookies_reach_the_app_as_one_header(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    head = raw.head("/echo", extra=[("cookie", "a=1"), ("x-other", "o"), ("cookie", "b=2")])
    raw.send(HeadersFrame(1, data=head, flags=["END_HEADERS", "END_STREAM"]))
    body = b""
    for frame in raw.frames():
        if isinstance(frame, DataFrame):
            body += frame.data
            if "END_STREAM" in frame.flags:
                break
    raw.close()
    assert json.loads(body)["headers"]["cookie"] == "a=1; b=2"


async def test_many_concurrent_requests_share_one_connection(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    # More than MAX_CONCURRENT_STREAMS at once: the client queues what the server's SETTINGS do not allow.
    count = http2.MAX_CONCURRENT_STREAMS + 50
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}",
        verify=context,
        http2=True,
        timeout=30,
        limits=httpx.Limits(max_connections=1),
    ) as client:
        replies = await asyncio.gather(*(client.get(f"/echo?n={n}") for n in range(count)))
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in replies)
    assert {r.json()["query"] for r in replies} == {f"n={n}" for n in range(count)}
    assert len({tuple(r.json()["client"]) for r in replies}) == 1  # one TCP connection


def test_sse_streams_event_by_event(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    with h2_client(port, context) as client, client.stream("GET", "/sse") as reply:
        assert reply.http_version == "HTTP/2"
        events = [line for line in reply.iter_lines() if line]
    assert events == ["data: 0", "data: 1", "data: 2"]


def test_bodies_larger_than_every_window_arrive_whole(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    size = 3 * http2.CONNECTION_WINDOW + 17
    with h2_client(port, context) as client:
        assert client.post("/upload", content=b"x" * size).json() == {"size": size}
        # Bodies nobody reads give their window back: the connection keeps taking uploads.
        for _ in range(4):
            assert client.post("/ignore", content=b"y" * http2.CONNECTION_WINDOW).status_code == 200
        assert client.post("/upload", content=b"z" * 1000).json() == {"size": 1000}


def test_a_head_over_the_limit_is_431_and_the_connection_goes_on(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    with h2_client(port, context) as client:
        reply = client.get("/echo", headers={"X-Big": "a" * (MAX_HEAD_BYTES + 100)})
        assert reply.status_code == 431 and reply.http_version == "HTTP/2"
        assert reply.json()["error"] == "headers_too_large"
        assert client.get("/echo").status_code == 200


def test_a_head_over_the_hard_limit_ends_the_connection(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    big = raw.head("/echo", extra=[("x-big", "a" * (http2.HARD_HEADER_LIST_BYTES + 10))])
    chunks = [big[i : i + 16384] for i in range(0, len(big), 16384)]
    frames = [HeadersFrame(1, data=chunks[0], flags=["END_STREAM"])]
    frames += [ContinuationFrame(1, data=c) for c in chunks[1:-1]]
    frames.append(ContinuationFrame(1, data=chunks[-1], flags=["END_HEADERS"]))
    raw.send(*frames)
    goaway = raw.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    raw.close()


def test_an_exception_in_the_app_is_a_500(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    with h2_client(port, context) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/echo").status_code == 200


def test_a_continuation_flood_ends_the_connection(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    # A head that never ends: CONTINUATION frames after CONTINUATION frames (CVE-2024-27316 style).
    raw.send(HeadersFrame(1, data=raw.head("/echo"), flags=["END_STREAM"]))
    padding = b"\x00" * 1024
    for _ in range(10):
        try:
            raw.send(*(ContinuationFrame(1, data=padding) for _ in range(20)))
        except OSError:
            break
    goaway = raw.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    raw.close()


def test_rapid_reset_is_cut_off_and_others_are_served(served: tuple[App, int, Any]) -> None:
    app, port, context = served
    raw = RawH2(port, context)
    # HEADERS then RST_STREAM, over and over (CVE-2023-44487), each request left to run (/hold).
    frames = []
    for n in range(1000):
        sid = 2 * n + 1
        frames += [HeadersFrame(sid, data=raw.head("/hold"), flags=["END_HEADERS"]), RstStreamFrame(sid, error_code=8)]
    raw.send(*frames[:200])  # a hundred pairs: within the control-frame budget
    raw.send(*frames[200:])
    goaway = raw.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    raw.close()
    assert app.calls <= 2 * http2.MAX_CONCURRENT_STREAMS
    with h2_client(port, context) as client:
        assert client.get("/echo").status_code == 200


@pytest.mark.parametrize("flood", ["ping", "settings", "empty data"])
def test_a_control_frame_flood_is_bounded(served: tuple[App, int, Any], flood: str) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    if flood == "ping":
        frames = [PingFrame(0, opaque_data=b"%08d" % n) for n in range(5000)]
    elif flood == "settings":
        frames = [SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: n}) for n in range(5000)]
    else:
        frames = [raw.request(1, "/hold", end_stream=False), *(DataFrame(1, data=b"") for _ in range(5000))]
    try:
        raw.send(*frames)
    except OSError:
        pass  # the server hung up part way: that is the point
    answered = 0
    goaway = None
    for frame in raw.frames():
        if isinstance(frame, GoAwayFrame):
            goaway = frame
            break
        answered += isinstance(frame, (PingFrame, SettingsFrame))
    raw.close()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert answered <= 2 * http2.CONTROL_BURST + 100


def test_browser_priorities_on_requests_are_not_charged_as_control_frames(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    answered, sid = 0, 1
    for _batch in range(5):  # 5 x 80 prioritised requests: past the control-frame budget if each were charged
        frames = []
        for _ in range(80):
            head = raw.head("/echo")
            frames.append(
                HeadersFrame(sid, data=head, flags=["END_HEADERS", "END_STREAM", "PRIORITY"], stream_weight=15)
            )
            sid += 2
        raw.send(*frames)
        done = 0
        for frame in raw.frames():
            assert not isinstance(frame, GoAwayFrame), frame
            if isinstance(frame, DataFrame) and "END_STREAM" in frame.flags:
                done += 1
                if done == 80:
                    break
        answered += done
    raw.close()
    assert answered == 400


def test_more_open_streams_than_the_settings_allow_end_the_connection(served: tuple[App, int, Any]) -> None:
    _app, port, context = served
    raw = RawH2(port, context)
    raw.send(*(raw.request(2 * n + 1, "/hold", end_stream=False) for n in range(http2.MAX_CONCURRENT_STREAMS + 1)))
    goaway = raw.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    raw.close()


def test_a_head_that_never_completes_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2, "HEAD_TIMEOUT_S", 1.0)
    with serving(App(), tmp_path / "tls") as (_server, port, context):
        raw = RawH2(port, context)
        raw.send(HeadersFrame(1, data=raw.head("/echo")[:5], flags=["END_STREAM"]))  # no END_HEADERS
        assert raw.closed_within(5)
        raw.close()


def test_an_idle_connection_is_closed_after_keep_alive(tmp_path: Path) -> None:
    with serving(App(), tmp_path / "tls", timeout_keep_alive=1) as (_server, port, context):
        raw = RawH2(port, context)
        raw.send(raw.request(1, "/echo"))
        frames = list(raw.frames(5))
        assert raw.eof
        assert any(isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in frames)
        goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaway and goaway[0].error_code == ErrorCodes.NO_ERROR
        raw.close()


def test_an_upload_answered_early_is_drained_past_the_keep_alive_timeout(tmp_path: Path) -> None:
    def slow_body() -> Iterator[bytes]:
        for _ in range(5):
            time.sleep(0.4)
            yield b"u" * 1_000_000  # past the windows: the client waits for their updates

    with serving(App(), tmp_path / "tls", timeout_keep_alive=1) as (_server, port, context):
        with h2_client(port, context) as client:
            # /ignore answers at once; the client goes on sending for 2 s, then reads the answer.
            assert client.post("/ignore", content=slow_body()).status_code == 200
            assert client.get("/echo").status_code == 200


def test_a_stream_reset_while_its_answer_waits_for_a_window_is_released(tmp_path: Path) -> None:
    with serving(App(), tmp_path / "tls", timeout_keep_alive=1) as (_server, port, context):
        raw = RawH2(port, context)
        # A zero window: the answer cannot leave; then the client gives up on it.
        raw.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}), raw.request(1, "/big"))
        headers = [f for f in raw.frames(1) if isinstance(f, HeadersFrame)]
        assert headers, "the answer's HEADERS leave; its DATA waits"
        raw.send(RstStreamFrame(1, error_code=ErrorCodes.CANCEL))
        # Released: the connection is idle again, and keep-alive closes it.
        goaway = raw.goaway(timeout_s=5)
        assert goaway is not None and goaway.error_code == ErrorCodes.NO_ERROR
        raw.close()


def test_graceful_shutdown_answers_the_stream_in_flight(tmp_path: Path) -> None:
    with serving(App(), tmp_path / "tls") as (server, port, context):
        raw = RawH2(port, context)
        raw.send(raw.request(1, "/slow"))
        threading.Timer(0.3, lambda: setattr(server, "should_exit", True)).start()
        frames = list(raw.frames(15))
        raw.close()
    kinds = [type(f).__name__ for f in frames]
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == 1
    data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == 1]
    assert data and json.loads(b"".join(f.data for f in data)) == {"slow": True}, kinds
    assert kinds.index("GoAwayFrame") < kinds.index("DataFrame")  # GOAWAY first, then the answer
    assert raw.eof


def test_concurrency_limit_is_503_per_stream(tmp_path: Path) -> None:
    with serving(App(), tmp_path / "tls", max_connections=1) as (_server, port, context):
        # This connection is the one allowed: every request on it is past the limit.
        with h2_client(port, context) as client:
            assert client.get("/echo").status_code == 503
