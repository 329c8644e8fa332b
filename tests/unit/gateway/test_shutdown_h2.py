"""HTTP/2 at the gateway's graceful shutdown (services/gateway/http2.py): a request whose frames were in
the socket, unread, when the drain began is accepted and answered before the GOAWAY's last stream id
is chosen (the HTTP/1.1 cases and their helpers: test_shutdown_keepalive.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame

from tests.unit.gateway.test_http_protocol_h2_raw import RawH2, serving
from tests.unit.gateway.test_shutdown_keepalive import app, begin_shutdown, on_server_loop


def test_a_first_request_unread_when_the_drain_begins_is_answered(tmp_path: Path) -> None:
    # A GOAWAY with last stream id 0 would leave stream 1 unanswered: a retry elsewhere is allowed,
    # but httpx (httpcore) retries only above a last stream id it got, and 0 is none.
    with serving(app, tmp_path / "tls") as (server, port, context):
        raw = RawH2(port, context)
        deadline = time.monotonic() + 10
        while not server.server_state.connections:
            assert time.monotonic() < deadline, "the server never had the connection"
            time.sleep(0.01)

        def race() -> None:
            raw.send(raw.request(1, "/raced"))
            begin_shutdown(server)

        on_server_loop(server, race)
        frames = list(raw.frames(10))
        raw.close()
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == 1
    assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in frames)
    data = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert json.loads(data) == {"path": "/raced"}
    assert raw.eof
