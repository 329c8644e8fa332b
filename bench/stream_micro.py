"""A streamed chat's parts in the gateway, old way against new, in one process, alternated round by round
so that the shared machine's drift hits both alike: CPU microseconds per streamed request (process time),
whole and up to the first event sent.

- a streamed chat request through the gateway app (edge included, rate limits off, the pure-ASGI route),
  its SSE answer sent by Starlette's StreamingResponse (before: the events and the disconnect watch as
  two tasks of an anyio task group) and by services/gateway/api/streams.py's SseResponse (the events from
  the request's task, the watch alone a task). The router is an in-process stand-in answering 7 content
  chunks and a finishing one at once (the same for both: the gRPC call is not what is compared).
- the same over the gateway's real HTTPS server configuration (uvicorn, TLS, ASGI 2.3), the app in a
  process of its own (one per way), an aiohttp client here on a kept-alive connection: CPU per streamed
  request of the server (from /proc, 10 ms ticks over a round) and of the client.

Run: ``python -m bench.stream_micro`` (prints a markdown table; writes nothing). The provider side of a
stream is in ``python -m bench.router_micro``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
import uvloop
from starlette.responses import StreamingResponse
from uvicorn.lifespan.off import LifespanOff

from bench.gateway_micro import CALLS, ROUNDS, chat_scope, stand_in_state
from bench.results import micro_table
from goblin.v1 import common_pb2
from goblin_tools.suite import free_ports
from services.gateway.api.routes import openai
from services.gateway.tls import ensure_dev_certificates, https_config

STREAM_BODY = (
    b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, benchmark!"}],'
    b' "max_tokens": 16, "stream": true}'
)
WORDS = ["Hello,", " benchmark!", " This", " is", " the", " fake", " answer."]


class StandInStream:
    """A router stream as the gateway's client sees it: 7 content chunks, then the finishing one."""

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        header = {"id": "chatcmpl-8b1f", "created": 1_764_000_000, "model": "openai/gpt-4o-mini", "provider": "openai"}
        chunks = [
            common_pb2.ChatChunk(**header, delta=w, role="assistant" if i == 0 else "") for i, w in enumerate(WORDS)
        ]
        chunks.append(
            common_pb2.ChatChunk(
                **header, finish_reason="stop", usage=common_pb2.Usage(prompt_tokens=9, completion_tokens=7)
            )
        )
        self._chunks = iter(chunks)

    async def read(self) -> common_pb2.ChatChunk | None:
        return next(self._chunks, None)

    def cancel(self) -> None:
        pass


class StandInRouter:
    def chat_stream(self, request: common_pb2.ChatRequest, deadline_s: float) -> StandInStream:
        return StandInStream()


def streaming_response(events: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    """The SSE answer as it was sent before SseResponse."""
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def stand_in_app(home: Path) -> Any:
    """The gateway app (edge included, rate limits off) over stand-in auth and router."""
    from services.gateway.main import create_app

    settings, state = stand_in_state(home, StandInRouter())
    app = create_app(settings)
    app.state.gateway = state
    return app


def stream_calls(home: Path) -> dict[str, Callable[[], Awaitable[float]]]:
    """A streamed chat through the whole app, its answer sent both ways; each call returns the CPU seconds
    until its first event was handed to the server."""
    app = stand_in_app(home)
    kept = openai.SseResponse

    def caller(response: Callable[..., Any]) -> Callable[[], Awaitable[float]]:
        async def call() -> float:
            openai.SseResponse = response  # type: ignore[assignment]
            scope = chat_scope(body_size=len(STREAM_BODY), spec_version="2.3")  # what uvicorn says
            sent: list[dict[str, Any]] = []
            started = time.process_time()
            first = 0.0
            body_read = False
            never = asyncio.Event()

            async def receive() -> dict[str, Any]:
                nonlocal body_read
                if not body_read:
                    body_read = True
                    return {"type": "http.request", "body": STREAM_BODY, "more_body": False}
                await never.wait()  # the client stays: the disconnect watch waits until cancelled
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                nonlocal first
                if not first and message["type"] == "http.response.body":
                    first = time.process_time()
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200 and sent[-2]["body"] == b"data: [DONE]\n\n", sent
            return first - started

        return call

    return {
        "gateway stream through the app: StreamingResponse (before)": caller(streaming_response),
        "gateway stream through the app: SseResponse (kept)": caller(kept),
    }


def serve_gateway(home: str, cert: str, key: str, port: int, kept: bool) -> None:
    """A child process: :func:`stand_in_app` served by the gateway's HTTPS configuration on ``port``, its
    SSE answers sent by SseResponse (``kept``) or by StreamingResponse."""
    if not kept:
        openai.SseResponse = streaming_response  # type: ignore[assignment,misc]
    uvloop.install()
    app = stand_in_app(Path(home))
    config = https_config(app, "127.0.0.1", port, Path(cert), Path(key), None)
    config.lifespan_class = LifespanOff  # the lifespan would replace the stand-ins with real clients
    uvicorn.Server(config).run()


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def https_rounds(home: Path, results: dict[str, list[float]]) -> None:
    """The streamed chat over real HTTPS, from a gateway in its own process (one per way), alternated: the
    server's CPU per streamed request (from /proc: 10 ms ticks over a round) and this client's."""
    ca, cert, key = ensure_dev_certificates(home / "tls")
    spawn = multiprocessing.get_context("spawn")
    cases = {
        "gateway stream over HTTPS, its own process: StreamingResponse (before)": False,
        "gateway stream over HTTPS, its own process: SseResponse (kept)": True,
    }
    servers = {}
    for name, kept in cases.items():
        port = free_ports(1)[0]
        child = spawn.Process(target=serve_gateway, args=(str(home), str(cert), str(key), port, kept), daemon=True)
        child.start()
        servers[name] = (child, port)
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"content-type": "application/json", "authorization": "Bearer bench-key"}
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1)) for name in cases}
    try:

        async def one(name: str) -> None:
            url = f"https://localhost:{servers[name][1]}/v1/chat/completions"
            async with sessions[name].post(url, data=STREAM_BODY, headers=headers) as response:
                body = await response.read()
                assert body.endswith(b"data: [DONE]\n\n"), (response.status, body[:300])

        for name in cases:
            for _ in range(400):  # the server's start
                try:
                    await one(name)
                    break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            for _ in range(50):
                await one(name)
        for _ in range(ROUNDS):
            for name in cases:
                pid = servers[name][0].pid
                assert pid is not None
                server_before, started = process_cpu_s(pid), time.process_time()
                for _ in range(CALLS):
                    await one(name)
                results.setdefault(f"{name}, server", []).append((process_cpu_s(pid) - server_before) / CALLS * 1e6)
                results.setdefault(f"{name}, client", []).append((time.process_time() - started) / CALLS * 1e6)
    finally:
        for session in sessions.values():
            await session.close()
        for child, _ in servers.values():
            child.terminate()
            child.join(10)


async def measure(home: Path) -> dict[str, list[float]]:
    calls = stream_calls(home)
    results: dict[str, list[float]] = {}
    for fn in calls.values():
        for _ in range(50):
            await fn()  # warm
    for _ in range(ROUNDS):
        for name, fn in calls.items():
            started = time.process_time()
            firsts = 0.0
            for _ in range(CALLS):
                firsts += await fn()
            whole = time.process_time() - started
            results.setdefault(f"{name}, whole stream", []).append(whole / CALLS * 1e6)
            results.setdefault(f"{name}, to the first event", []).append(firsts / CALLS * 1e6)
    await https_rounds(home, results)
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        results = uvloop.run(measure(Path(home)))
    load = os.getloadavg()[0]
    print(f"{ROUNDS} rounds of {CALLS} calls, alternated; load average {load:.1f} on {os.cpu_count()} cores")
    print("\n" + micro_table(results, "part of a streamed request"))


if __name__ == "__main__":
    main()
