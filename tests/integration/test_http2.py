"""HTTP/2 at the real gateway (``goblin up``, real TLS): what an h2 client gets is what an HTTP/1.1 one
gets (headers, correlation ids, error envelopes, limits, SSE), many chats share one connection, and an
h2 attacker (rapid reset) is cut off while everyone else is answered.

The protocol's own cases (floods, timeouts, graceful shutdown) are in
tests/unit/gateway/test_http_protocol_h2.py, against the same uvicorn configuration."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import HeadersFrame, RstStreamFrame

from goblin_tools.suite import Suite
from services.gateway import http2
from services.gateway.config import GatewaySettings
from services.gateway.http_protocol import MAX_HEAD_BYTES
from tests.unit.gateway.test_http_protocol_h2_raw import RawH2

MAX_CHAT_BODY = GatewaySettings.model_fields["max_chat_body_bytes"].default
CHAT = {"model": "local", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}
# Connection-specific, or different on each response.
PER_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "date", "content-length", "x-correlation-id"}


def h2_client(suite: Suite, **kwargs: object) -> httpx.Client:
    return suite.client(http2=True, **kwargs)


def port(suite: Suite) -> int:
    return int(suite.gateway_url.rsplit(":", 1)[1])


def test_h2_and_http11_get_the_same_headers_and_correlation_id(suite: Suite) -> None:
    with h2_client(suite) as h2c, suite.client() as h1c:
        over_h2 = h2c.get("/health", headers={"X-Correlation-ID": "h2-corr-1"})
        over_h1 = h1c.get("/health", headers={"X-Correlation-ID": "h1-corr-1"})
    assert over_h2.http_version == "HTTP/2" and over_h1.http_version == "HTTP/1.1"
    assert over_h2.status_code == over_h1.status_code == 200
    assert over_h2.headers["x-correlation-id"] == "h2-corr-1"
    assert set(over_h1.headers) - PER_RESPONSE <= set(over_h2.headers)  # HSTS, CSP and the rest
    assert "strict-transport-security" in over_h2.headers


def test_errors_have_the_envelope_over_h2(suite: Suite) -> None:
    with h2_client(suite) as client:
        unauthorized = client.post("/v1/chat/completions", json=CHAT, headers={"X-Correlation-ID": "h2-401"})
        too_big = client.post(
            "/v1/chat/completions",
            content=b"{" + b" " * MAX_CHAT_BODY + b"}",
            headers={"Authorization": f"Bearer {suite.admin_key}", "Content-Type": "application/json"},
        )
        head = client.get("/health", headers={"X-Huge": "a" * (MAX_HEAD_BYTES + 1000)})
        after = client.get("/health")
    assert unauthorized.status_code == 401 and unauthorized.http_version == "HTTP/2"
    assert unauthorized.json()["correlation_id"] == "h2-401" and unauthorized.json()["error"]
    assert too_big.status_code == 413 and "error" in too_big.json()
    assert head.status_code == 431 and head.json()["error"] == "headers_too_large"
    assert after.status_code == 200  # the connection outlives a 431


async def test_many_chats_share_one_connection_beside_an_http11_client(suite: Suite) -> None:
    auth = {"Authorization": f"Bearer {suite.admin_key}"}
    async with (
        httpx.AsyncClient(
            base_url=suite.gateway_url,
            verify=suite.ssl_context(),
            http2=True,
            timeout=180,
            headers=auth,
            limits=httpx.Limits(max_connections=1),
        ) as h2c,
        httpx.AsyncClient(base_url=suite.gateway_url, verify=suite.ssl_context(), timeout=180, headers=auth) as h1c,
    ):
        chats = [h2c.post("/v1/chat/completions", json=CHAT) for _ in range(8)]
        replies = await asyncio.gather(*chats, h1c.post("/v1/chat/completions", json=CHAT))
    assert [r.status_code for r in replies] == [200] * 9, [r.text[:200] for r in replies]
    assert [r.http_version for r in replies] == ["HTTP/2"] * 8 + ["HTTP/1.1"]
    assert all(r.json()["object"] == "chat.completion" for r in replies)


def test_a_chat_streams_over_h2(suite: Suite) -> None:
    body = {**CHAT, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
    with (
        h2_client(suite, timeout=180, headers={"Authorization": f"Bearer {suite.admin_key}"}) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as reply,
    ):
        assert reply.status_code == 200 and reply.http_version == "HTTP/2"
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] <= 4


def test_rapid_reset_is_cut_off_while_others_are_answered(suite: Suite) -> None:
    answered: list[int] = []
    stop = threading.Event()

    def others() -> None:
        with h2_client(suite, timeout=10) as client:
            while not stop.is_set():
                answered.append(client.get("/health").status_code)

    bystander = threading.Thread(target=others)
    bystander.start()
    try:
        raw = RawH2(port(suite), suite.ssl_context())
        frames = []
        for n in range(2000):  # HEADERS then RST_STREAM, over and over (CVE-2023-44487)
            sid = 2 * n + 1
            frames += [HeadersFrame(sid, data=raw.head("/health"), flags=["END_HEADERS"]), RstStreamFrame(sid)]
        try:
            raw.send(*frames)
        except OSError:
            pass  # cut off part way
        goaway = raw.goaway()
        raw.close()
    finally:
        stop.set()
        bystander.join(timeout=30)
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert answered and set(answered) == {200}
    with h2_client(suite) as client:
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("count", [http2.MAX_CONCURRENT_STREAMS + 20])
async def test_more_streams_than_the_limit_are_queued_by_the_client_not_refused(suite: Suite, count: int) -> None:
    async with httpx.AsyncClient(
        base_url=suite.gateway_url,
        verify=suite.ssl_context(),
        http2=True,
        timeout=60,
        limits=httpx.Limits(max_connections=1),
    ) as client:
        replies = await asyncio.gather(*(client.get("/health") for _ in range(count)))
    assert [r.status_code for r in replies] == [200] * count
