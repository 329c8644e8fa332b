"""The gateway's edge: one pure-ASGI middleware (:class:`EdgeMiddleware`), one send wrapper and no
per-request task or body copy. What it does, in request order (the order the separate middlewares it
replaced had):

- the envelope: correlation id in and out, X-Trace-Id out, in-flight gauge, metrics by route template,
  the access log line;
- security headers: HSTS, nosniff, frame and referrer policies, a strict default CSP;
- the last net: an exception no handler mapped becomes the 500 error envelope, with the correlation id
  and the security headers;
- CORS, when origins are configured (Starlette's CORSMiddleware, inside the net, outside the limits, so
  preflights are neither limited nor charged and refusals carry its headers);
- the body limit: 413 beyond it;
- the timeout: 504 when a route does not start answering in time;
- rate limits: per client and route class, in Redis (one round trip); 429 with Retry-After when over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goblin.v1 import auth_pb2
from services.common.context import CORRELATION_HEADER, correlation_id_var, hash_user_id, new_correlation_id
from services.common.telemetry import request_trace_id, request_trace_id_var
from services.gateway.errors import HTTP_CODES, error_body
from services.gateway.metrics import HTTP_429, HTTP_DURATION, HTTP_ERRORS, HTTP_IN_PROGRESS, HTTP_REQUESTS
from services.gateway.ratelimit import (
    CLIENT_IP_STATE,
    Decision,
    RateLimiter,
    RateLimiterUnavailable,
    RouteClass,
    TrustedProxies,
    bearer_token,
    classify,
    client_for,
)

access_log = logging.getLogger("goblin.access")
error_log = logging.getLogger(__name__)
_HEADER_NAME = CORRELATION_HEADER.lower().encode()
# The request's trace id on every response: the trace's when traced (services.common.telemetry).
_TRACE_HEADER = b"x-trace-id"
_OWN_HEADERS = (_HEADER_NAME, _TRACE_HEADER)
# A client's id is echoed only if it is short and plain; anything else is replaced, never reflected.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNMATCHED = "unmatched"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _incoming_correlation_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == _HEADER_NAME:
            candidate = value.decode("latin-1")
            if _SAFE_ID.match(candidate):
                return candidate
            break
    return new_correlation_id()


class RouteTemplates:
    """Path templates of the app (from its OpenAPI document, plus extra ones), compiled on first use,
    to label requests refused before routing (rate limits, body limits) with their template."""

    def __init__(self, source: Callable[[], Sequence[str]]) -> None:
        self.source = source
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str:
        if self._compiled is None:
            self._compiled = [(compile_path(t)[0], t) for t in self.source()]
        for pattern, template in self._compiled:
            if pattern.match(path):
                return template
        return UNMATCHED


def route_template(scope: Scope, templates: RouteTemplates | None = None) -> str:
    """The matched route's path template (``/v1/tasks/{task_id}``), never the raw path."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None) or UNMATCHED
    return templates.match(scope.get("path", "")) if templates is not None else UNMATCHED


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
# The API answers JSON: nothing in it may load or run anything. Pages (the admin dashboard) set their own.
DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_ADDED_NAMES = frozenset(name for name, _ in (*SECURITY_HEADERS, DEFAULT_CSP))
CHAT_BODY_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
# Where the edge keeps its per-request record (:class:`_Exchange`) in the ASGI scope.
_EXCHANGE = "goblin.edge"


def is_document_upload(scope: Scope) -> bool:
    """``POST /v1/collections/{c}/documents``: a larger body, and the time to embed it."""
    path = scope.get("path", "")
    return scope.get("method") == "POST" and path.startswith("/v1/collections/") and path.endswith("/documents")


class RateLimits:
    """What the edge needs to charge a request: the limiter, who may forward a client's address, and
    ``verified`` (the gateway's principal cache: a local lookup) to tell a verified credential.

    The edge runs before authentication, so only a credential this gateway has already verified is
    charged as itself and its user (see :func:`services.gateway.ratelimit.client_for`); the first request
    of a credential in each cache period is charged to the IP: the price of adding no round trip here.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        proxies: TrustedProxies,
        verified: Callable[[str], auth_pb2.Principal | None],
    ) -> None:
        self.limiter = limiter
        self.proxies = proxies
        self.verified = verified


class _Exchange:
    """One request's state shared by the edge's parts: what the single send wrapper needs to know."""

    __slots__ = ("status", "started", "deadline", "limit_headers")

    def __init__(self) -> None:
        self.status = 500
        self.started = False
        self.deadline: asyncio.Timeout | None = None
        self.limit_headers: list[tuple[bytes, bytes]] | None = None


class EdgeMiddleware:
    """Every edge behaviour of the gateway in one middleware (see the module's docstring for the order)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        templates: RouteTemplates | None = None,
        max_bytes: int,
        document_bytes: int | None = None,
        chat_bytes: int | None = None,
        default_timeout_s: float,
        chat_timeout_s: float,
        rate_limits: RateLimits | None = None,
        cors: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.templates = templates
        self.default_bytes = max_bytes
        self.document_bytes = document_bytes or max_bytes
        self.chat_bytes = chat_bytes or max_bytes
        self.default_timeout_s = default_timeout_s
        self.chat_timeout_s = chat_timeout_s
        self.rate_limits = rate_limits
        self.inner: ASGIApp = CORSMiddleware(self._guarded, **cors) if cors else self._guarded
        # prometheus_client's .labels() costs a lock and a dict per call: children kept per label set.
        self._in_progress: dict[str, Any] = {}
        self._counted: dict[tuple[str, str, int], tuple[Any, Any, Any | None, Any | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _incoming_correlation_id(scope)
        token = correlation_id_var.set(correlation_id)
        trace_id = request_trace_id(_header(scope, b"traceparent"))
        trace_token = request_trace_id_var.set(trace_id)
        method = scope["method"]
        started = time.perf_counter()
        exchange = scope[_EXCHANGE] = _Exchange()
        own = ((_HEADER_NAME, correlation_id.encode()), (_TRACE_HEADER, trace_id.encode()))

        async def send_out(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.started = True
                if exchange.deadline is not None:
                    exchange.deadline.reschedule(None)  # a response under way is not cut
                headers = [h for h in message.get("headers", ()) if h[0] not in _OWN_HEADERS]
                if exchange.limit_headers:
                    headers += exchange.limit_headers
                present = {k.lower() for k, _ in headers} & _ADDED_NAMES
                if present:
                    headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                    if DEFAULT_CSP[0] not in present:
                        headers.append(DEFAULT_CSP)
                else:
                    headers += SECURITY_HEADERS
                    headers.append(DEFAULT_CSP)
                headers += own
                message["headers"] = headers
            await send(message)

        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = HTTP_IN_PROGRESS.labels(method)
        in_progress.inc()
        try:
            try:
                await self.inner(scope, receive, send_out)
            except Exception:
                error_log.exception("unhandled error", extra={"path": scope.get("path", "")})
                if exchange.started:
                    raise  # the answer is under way: the server can only cut the connection
                exchange.limit_headers = None
                message = "internal error; quote the correlation id to report it"
                await _send_error(send_out, 500, "internal_error", message)
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - started
            endpoint = route_template(scope, self.templates)
            self._count(method, endpoint, exchange.status, elapsed)
            principal = scope.get("state", {}).get("principal")
            access_log.info(
                "request_completed",
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "endpoint": endpoint,
                    "status_code": exchange.status,
                    "duration_ms": round(elapsed * 1000, 3),
                    # Never the user id itself: a one-way digest that still groups one user's requests.
                    "user_hash": hash_user_id(principal.user_id) if principal is not None else "",
                },
            )
            correlation_id_var.reset(token)
            request_trace_id_var.reset(trace_token)

    def _count(self, method: str, endpoint: str, status: int, elapsed: float) -> None:
        children = self._counted.get((method, endpoint, status))
        if children is None:
            error_type = HTTP_CODES.get(status, str(status))
            children = self._counted[(method, endpoint, status)] = (
                HTTP_REQUESTS.labels(method, endpoint, str(status)),
                HTTP_DURATION.labels(method, endpoint),
                HTTP_ERRORS.labels(method, endpoint, error_type) if status >= 400 else None,
                HTTP_429.labels(endpoint) if status == 429 else None,
            )
        requests, duration, errors, refused = children
        requests.inc()
        duration.observe(elapsed)
        if errors is not None:
            errors.inc()
        if refused is not None:
            refused.inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The body limit, then the timeout around the rate limit and the app."""
        path = scope.get("path", "")
        upload = is_document_upload(scope)
        if upload:
            max_bytes = self.document_bytes
        else:
            max_bytes = self.chat_bytes if path in CHAT_BODY_PATHS else self.default_bytes
        declared: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "invalid_request", "Content-Length is not a number")
                    return
        if declared is not None:
            # The HTTP server holds the client to its Content-Length, so checking it is enough.
            if declared > max_bytes:
                await _send_error(send, 413, "payload_too_large", _too_large(max_bytes))
                return
        elif scope.get("method") in ("POST", "PUT", "PATCH"):
            replay = await _whole_body(receive, send, max_bytes)
            if replay is None:
                return
            receive = replay
        route_class = classify(path)
        long = route_class is RouteClass.chat or upload
        limit = self.chat_timeout_s if long else self.default_timeout_s
        exchange: _Exchange = scope[_EXCHANGE]
        try:
            async with asyncio.timeout(limit) as deadline:
                exchange.deadline = deadline
                if self.rate_limits is None or scope.get("method") == "OPTIONS":
                    await self.app(scope, receive, send)
                elif await self._charge(scope, route_class, send):
                    await self.app(scope, receive, send)
        except TimeoutError:
            exchange.deadline = None
            if exchange.started:
                raise
            exchange.limit_headers = None
            await _send_error(send, 504, "timeout", f"no response within {limit:g} s")
        except BaseException:
            exchange.limit_headers = None  # the net's 500 carries no window numbers
            raise
        finally:
            exchange.deadline = None  # spent: nothing may reschedule it now

    async def _charge(self, scope: Scope, route_class: RouteClass, send: Send) -> bool:
        """Charge the request to its client; False when it was refused here (429, or 503 failing closed)."""
        limits = self.rate_limits
        assert limits is not None
        authorization: bytes | None = None
        forwarded: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value
            elif name == b"x-forwarded-for":
                forwarded = value
        peer = (scope.get("client") or ("unknown", 0))[0]
        ip = limits.proxies.client_ip(peer, forwarded.decode("latin-1") if forwarded else None)
        # Routes forward the same address to auth (deps.client_ip): resolved once, here.
        scope.setdefault("state", {})[CLIENT_IP_STATE] = ip
        credential = bearer_token(authorization.decode("latin-1") if authorization else None)
        principal = limits.verified(credential) if credential else None
        client = client_for(route_class, principal, credential, ip)
        try:
            outcome = await limits.limiter.hit(route_class, client)
        except RateLimiterUnavailable:
            await _send_error(send, 503, "rate_limiter_unavailable", "rate limiting is unavailable; try again")
            return False
        if isinstance(outcome, Decision):
            await _send_error(
                send,
                429,
                "rate_limit_exceeded",
                f"Rate limit exceeded: {outcome.description}",
                headers=[*_limit_headers(outcome), (b"retry-after", str(outcome.retry_after).encode())],
                extra={"retry_after": outcome.retry_after},
            )
            return False
        if outcome is not None:
            decision = await outcome.decision()
            if decision is not None:
                scope[_EXCHANGE].limit_headers = _limit_headers(decision)
        return True


async def _whole_body(receive: Receive, send: Send, max_bytes: int) -> Receive | None:
    """A body without Content-Length (chunked), read here up to ``max_bytes`` and handed on whole, since
    FastAPI reads whole bodies anyway: a receive that replays it, or None when answered (413) or the
    client went away before finishing it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        size += len(body)
        if size > max_bytes:
            await _send_error(send, 413, "payload_too_large", _too_large(max_bytes))
            return None
        chunks.append(body)
        if not message.get("more_body", False):
            break
    whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    async def replay() -> Message:
        nonlocal whole
        if whole is not None:
            message, whole = whole, None
            return message
        return await receive()

    return replay


def _too_large(max_bytes: int) -> str:
    return f"request body larger than {max_bytes} bytes"


def _limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(decision.reset_at).encode()),
    ]


async def _send_error(
    send: Send,
    status: int,
    error: str,
    message: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """The JSON error body from below the app (middleware answers without a route)."""
    body = json.dumps(error_body(error, message, extra=extra)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
