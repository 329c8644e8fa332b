"""The gateway's per-request parts, old way against new, in one process, alternated round by round so
that the shared machine's drift hits both alike: CPU microseconds per operation (process time).

- rate limit of a chat request (its class's window and its user's ceiling): the ``limits`` library
  (a hit per window, then each window's numbers: 4 round trips), our Lua script over redis-py (1), and
  the same script over services/gateway/redis_script.py's pipelined connection (1); a real Redis
  (goblin_tools.embedded), sequential calls;
- the signed principal: a Principal built and signed whole (as deps did), and the cached claims
  (clients/identity.py);
- the chat answer's JSON: Starlette's JSONResponse (the standard library) and FastJSONResponse (orjson);
- the access log line: services.common.logs.JsonFormatter, with json.dumps and with orjson;
- a whole non-streaming chat request through the gateway app (edge included, rate limits off), answered
  by its FastAPI route and by the pure-ASGI route (services/gateway/api/asgi_routes.py); the backends are
  in-process stand-ins (the same work for both: the gRPC call is not what is compared).

- a unary answer written by the HTTPS server (real TLS over loopback, a keep-alive client in another
  process sending requests one at a time): services/gateway/http_protocol.py's protocol with uvicorn's
  cycle (head and body in two writes, two TLS records) and with its own (one write); the server side's CPU per request.

Run: ``python -m bench.gateway_micro`` (prints a markdown table; writes nothing).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import uvloop
from fastapi.responses import JSONResponse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bench.results import micro_table
from goblin.v1 import auth_pb2, common_pb2
from goblin_tools.embedded import EmbeddedRedis
from services.common import logs
from services.common.principal import Principal, load_signer
from services.common.secrets import DetectionPoint, SecretGuard
from services.gateway.api.fast_json import FastJSONResponse
from services.gateway.caches import PrincipalCache
from services.gateway.clients.identity import sign_principal
from services.gateway.ratelimit import (
    KEY_PREFIX,
    USER_NAMESPACE,
    Client,
    RateLimiter,
    RouteClass,
    TrustedProxies,
    parse_limits,
)

ROUNDS = int(os.environ.get("MICRO_ROUNDS", "7"))
CALLS = int(os.environ.get("MICRO_CALLS", "400"))
PRINCIPAL = auth_pb2.Principal(
    user_id="3f0c5a2e-user", tenant_id="default", role="admin", scopes=["*"], api_key_id="key-1", requests_per_day=0
)
ANSWER = {
    "id": "chatcmpl-8b1f",
    "object": "chat.completion",
    "created": 1_764_000_000,
    "model": "openai/gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, benchmark! " * 4},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 16, "total_tokens": 37},
    "system_fingerprint": None,
}


def timed_sync(fn: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        fn()
    return (time.process_time() - started) / CALLS * 1e6


async def timed_async(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        await fn()
    return (time.process_time() - started) / CALLS * 1e6


def limits_library(redis_url: str, limiter: RateLimiter, client: Client) -> Callable[[], Awaitable[object]]:
    """The limiter as it was: a ``limits`` hit per window, then every window's numbers."""
    uri = redis_url.replace("unix://", "redis+unix://", 1) if redis_url.startswith("unix://") else redis_url
    strategy = MovingWindowRateLimiter(RedisStorage(f"async+{uri}", implementation="redispy", key_prefix=KEY_PREFIX))
    windows = [(item, RouteClass.chat.value, client.key) for item in limiter.limits[RouteClass.chat]]
    windows += [(item, USER_NAMESPACE, client.user or "") for item in limiter.user_limits]

    async def hit() -> object:
        for item, namespace, key in windows:
            await strategy.hit(item, namespace, key)
        return [await strategy.get_window_stats(item, namespace, key) for item, namespace, key in windows]

    return hit


def log_record() -> logging.LogRecord:
    record = logging.LogRecord("goblin.access", logging.INFO, __file__, 1, "request_completed", None, None)
    extra = {"method": "POST", "path": "/v1/chat/completions", "endpoint": "/v1/chat/completions"}
    for key, value in {**extra, "status_code": 200, "duration_ms": 3.217, "user_hash": "0123456789abcdef"}.items():
        setattr(record, key, value)
    return record


CHAT_BODY = json.dumps(
    {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, benchmark!"}], "max_tokens": 16}
).encode()


class StandInAuth:
    """Auth as the gateway's client sees it: every credential is :data:`PRINCIPAL`."""

    async def authenticate(self, credential: str) -> auth_pb2.Principal:
        return PRINCIPAL


class StandInRouter:
    """The router as the gateway's client sees it: one fixed answer."""

    reply = common_pb2.ChatResponse(
        id="chatcmpl-8b1f",
        created=1_764_000_000,
        model="openai/gpt-4o-mini",
        provider="openai",
        message=common_pb2.ChatMessage(role="assistant", content="Hello, benchmark! " * 4),
        finish_reason="stop",
        usage=common_pb2.Usage(prompt_tokens=21, completion_tokens=16),
    )

    async def chat(self, request: common_pb2.ChatRequest, deadline_s: float) -> common_pb2.ChatResponse:
        return self.reply


def chat_scope(*, body_size: int, spec_version: str) -> dict[str, Any]:
    """The ASGI scope of an HTTPS POST /v1/chat/completions with the stand-in key and a JSON body."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer bench-key"),
            (b"content-length", str(body_size).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
    }


def stand_in_state(home: Path, router: object) -> tuple[Any, SimpleNamespace]:
    """The gateway's settings (rate limits off) and its state over stand-in auth and ``router``."""
    os.environ.setdefault("GOBLIN_HOME", str(home))
    os.environ.setdefault("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing here connects to the stores
    os.environ["GOBLIN_RATE_LIMIT_ENABLED"] = "false"
    from services.gateway.config import GatewaySettings

    settings = GatewaySettings()
    state = SimpleNamespace(
        settings=settings,
        principals=PrincipalCache(settings.auth_cache_ttl_s),
        clients=SimpleNamespace(auth=StandInAuth(), router=router),
        secret_guard=SecretGuard(DetectionPoint.request_creation, policy=settings.secret_policy),
        proxies=TrustedProxies(settings.trusted_proxy_list),
    )
    return settings, state


def chat_route_calls(home: Path) -> dict[str, Callable[[], Awaitable[object]]]:
    """A chat request through the whole app, answered by the FastAPI route and by the pure-ASGI one."""
    from services.gateway.main import create_app

    settings, state = stand_in_state(home, StandInRouter())

    def caller(asgi_routes: bool) -> Callable[[], Awaitable[object]]:
        app = create_app(settings, asgi_routes=asgi_routes)
        app.state.gateway = state

        async def call() -> object:
            scope = chat_scope(body_size=len(CHAT_BODY), spec_version="2.4")
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": CHAT_BODY, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent
            return sent

        return call

    return {
        "chat request through the app (edge, no rate limit): FastAPI route": caller(False),
        "chat request through the app (edge, no rate limit): pure-ASGI route": caller(True),
    }


async def measure(redis_url: str, home: Path) -> dict[str, list[float]]:
    limits = {RouteClass.chat: parse_limits("1000000/minute")}
    user = parse_limits("1000000/minute")
    script_limiter = RateLimiter(redis_url, limits, user=user)
    redis_py_url = f"{redis_url}{'&' if '?' in redis_url else '?'}health_check_interval=0"
    redis_py_limiter = RateLimiter(redis_py_url, limits, user=user)  # a URL RedisScript leaves to redis-py
    assert redis_py_limiter.redis is not None and script_limiter.redis is None
    client = Client("key:bench", user="user:bench")
    library = limits_library(redis_url, script_limiter, client)
    signer = load_signer()
    formatter = logs.JsonFormatter("gateway")
    record = log_record()

    def sign_whole() -> str:
        return signer.sign(
            Principal(
                user_id=PRINCIPAL.user_id,
                tenant_id=PRINCIPAL.tenant_id,
                role=PRINCIPAL.role,
                scopes=tuple(PRINCIPAL.scopes),
                api_key_id=PRINCIPAL.api_key_id,
                session_id=PRINCIPAL.session_id,
                requests_per_day=PRINCIPAL.requests_per_day,
            )
        )

    def log_with_json() -> str:
        original = logs.orjson.dumps

        def refuse(*args: object, **kwargs: object) -> bytes:
            raise TypeError("the standard library's path")

        logs.orjson.dumps = refuse  # type: ignore[assignment]
        try:
            return formatter.format(record)
        finally:
            logs.orjson.dumps = original  # type: ignore[assignment]

    pairs_async: dict[str, Callable[[], Awaitable[object]]] = {
        "rate limit: limits library, 4 round trips": library,
        "rate limit: one Lua script over redis-py": lambda: redis_py_limiter.hit(RouteClass.chat, client),
        "rate limit: one Lua script, pipelined connection": lambda: script_limiter.hit(RouteClass.chat, client),
        **chat_route_calls(home),
    }
    pairs_sync: dict[str, Callable[[], object]] = {
        "principal: built and signed whole": sign_whole,
        "principal: cached claims, signed": lambda: sign_principal(PRINCIPAL),
        "chat answer JSON: JSONResponse (json)": lambda: JSONResponse(ANSWER),
        "chat answer JSON: FastJSONResponse (orjson)": lambda: FastJSONResponse(ANSWER),
        "access log line: JsonFormatter, json": log_with_json,
        "access log line: JsonFormatter, orjson": lambda: formatter.format(record),
    }
    results: dict[str, list[float]] = {name: [] for name in [*pairs_async, *pairs_sync]}
    for fn in pairs_async.values():
        for _ in range(50):
            await fn()  # warm: connections, scripts loaded
    for _ in range(ROUNDS):
        for name, fn in pairs_async.items():
            results[name].append(await timed_async(fn))
        for name, sync_fn in pairs_sync.items():
            results[name].append(timed_sync(sync_fn))
    await script_limiter.close()
    await redis_py_limiter.close()
    assert json.loads(FastJSONResponse(ANSWER).body) == ANSWER and orjson.loads(JSONResponse(ANSWER).body) == ANSWER
    return results


# The client of :func:`write_rounds`, in its own process so that its CPU is not counted: per line
# "port count" on stdin, ``count`` requests one at a time on a kept-alive TLS connection to that port.
WRITE_CLIENT = r"""
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
request = bytes.fromhex(sys.argv[2])
connections = {}
for line in sys.stdin:
    port, count = map(int, line.split())
    if port not in connections:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connections[port] = context.wrap_socket(raw, server_hostname="localhost")
    sock = connections[port]
    for _ in range(count):
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += sock.recv(65536)
    print("ok", flush=True)
"""


async def write_rounds(home: Path, results: dict[str, list[float]]) -> None:
    """A unary answer through the HTTPS server with uvicorn's protocol and with the gateway's, alternated;
    the server process's CPU per request (the client runs in another process)."""
    import asyncio
    import sys

    from starlette.responses import Response
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from services.gateway.http_protocol import BoundedHttpToolsProtocol
    from services.gateway.tls import ensure_dev_certificates, https_config

    body = orjson.dumps(ANSWER)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await Response(body, media_type="application/json")(scope, receive, send)

    ca, cert, key = ensure_dev_certificates(home / "tls")
    config = https_config(app, "127.0.0.1", 0, cert, key, None)
    assert config.ssl is not None
    config.ssl.set_alpn_protocols(["http/1.1"])
    loop = asyncio.get_running_loop()

    class TwoWrites(BoundedHttpToolsProtocol):
        """The gateway's protocol with uvicorn's own cycle: the head, then the body."""

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            HttpToolsProtocol._start_asgi_task(self, cycle, app)

    cases = {
        "unary answer over TLS: head and body in two writes (before)": TwoWrites,
        "unary answer over TLS: one write (http_protocol.py)": BoundedHttpToolsProtocol,
    }
    state, ports, servers = ServerState(), {}, []
    for name, protocol in cases.items():
        server = await loop.create_server(
            lambda p=protocol: p(config, state, {}, loop),
            "127.0.0.1",
            0,
            ssl=config.ssl,  # type: ignore[misc]
        )
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
    request += b"content-length: %d\r\n\r\n%s" % (len(CHAT_BODY), CHAT_BODY)
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITE_CLIENT,
        str(ca),
        request.hex(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdin is not None and client.stdout is not None

    async def run(port: int, count: int) -> float:
        started = time.process_time()
        client.stdin.write(f"{port} {count}\n".encode())  # type: ignore[union-attr]
        assert await client.stdout.readline() == b"ok\n"  # type: ignore[union-attr]
        return (time.process_time() - started) / count * 1e6

    try:
        for port in ports.values():
            await run(port, 50)  # warm: connections, TLS sessions
        for _ in range(ROUNDS):
            for name, port in ports.items():
                results.setdefault(name, []).append(await run(port, CALLS))
    finally:
        client.stdin.close()
        await client.wait()
        for server in servers:
            server.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        redis = EmbeddedRedis(Path(home))
        try:
            results = uvloop.run(measure(redis.url, Path(home)))
        finally:
            redis.stop()
        uvloop.run(write_rounds(Path(home), results))
    load = os.getloadavg()[0]
    print(f"{ROUNDS} rounds of {CALLS} calls, alternated; load average {load:.1f} on {os.cpu_count()} cores")
    print("\n" + micro_table(results, "part of a request"))


if __name__ == "__main__":
    main()
