"""The gateway's edge, as pure ASGI middleware (no per-request task or body copy), outermost first:

- RequestEnvelopeMiddleware: correlation id in and out, in-flight gauge, metrics by route template,
  the access log line;
- SecurityHeadersMiddleware: HSTS, nosniff, frame and referrer policies, a strict default CSP;
- InternalErrorMiddleware: an exception no handler mapped becomes the 500 error envelope here, inside
  the two above, so it still carries the correlation id and the security headers;
- RateLimitMiddleware: per client and route class, in Redis;
- BodyLimitMiddleware: 413 beyond the body limit;
- TimeoutMiddleware: 504 when a route does not start answering in time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goblin.v1 import auth_pb2
from services.common.context import CORRELATION_HEADER, correlation_id_var, hash_user_id, new_correlation_id
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
# A client's id is echoed only if it is short and plain; anything else is replaced, never reflected.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNMATCHED = "unmatched"


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


class RequestEnvelopeMiddleware:
    def __init__(self, app: ASGIApp, templates: RouteTemplates | None = None) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _incoming_correlation_id(scope)
        token = correlation_id_var.set(correlation_id)
        method = scope["method"]
        started = time.perf_counter()
        status_code = 500
        header_value = correlation_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_NAME]
                headers.append((_HEADER_NAME, header_value))
                message["headers"] = headers
            await send(message)

        in_progress = HTTP_IN_PROGRESS.labels(method)
        in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - started
            endpoint = route_template(scope, self.templates)
            HTTP_REQUESTS.labels(method, endpoint, str(status_code)).inc()
            HTTP_DURATION.labels(method, endpoint).observe(elapsed)
            if status_code >= 400:
                HTTP_ERRORS.labels(method, endpoint, HTTP_CODES.get(status_code, str(status_code))).inc()
            if status_code == 429:
                HTTP_429.labels(endpoint).inc()
            principal = scope.get("state", {}).get("principal")
            access_log.info(
                "request_completed",
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "endpoint": endpoint,
                    "status_code": status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                    # Never the user id itself: a one-way digest that still groups one user's requests.
                    "user_hash": hash_user_id(principal.user_id) if principal is not None else "",
                },
            )
            correlation_id_var.reset(token)


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


class SecurityHeadersMiddleware:
    """HSTS and friends on every response; a strict CSP unless the route set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if DEFAULT_CSP[0] not in present:
                    headers.append(DEFAULT_CSP)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class InternalErrorMiddleware:
    """The last net: an exception that escaped every route handler answers 500 with the error envelope.

    Starlette's own net (ServerErrorMiddleware) sits outside every middleware, where the correlation
    id is already gone and no security header is added; this one sits inside both. The body says only
    what the client can use (the correlation id to quote); the exception goes to the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_marking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_marking)
        except Exception:
            error_log.exception("unhandled error", extra={"path": scope.get("path", "")})
            if started:
                raise  # the answer is under way: the server can only cut the connection
            await _send_error(send, 500, "internal_error", "internal error; quote the correlation id to report it")


CHAT_BODY_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


def is_document_upload(scope: Scope) -> bool:
    """``POST /v1/collections/{c}/documents``: a larger body, and the time to embed it."""
    path = scope.get("path", "")
    return scope.get("method") == "POST" and path.startswith("/v1/collections/") and path.endswith("/documents")


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length; a body without one (chunked) is read
    here up to the limit and handed on whole, since FastAPI reads whole bodies anyway. Document uploads
    have a limit of their own (``document_bytes``), and so have chat completions, which may carry
    images (``chat_bytes``)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, document_bytes: int | None = None, chat_bytes: int | None = None
    ) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.document_bytes = document_bytes or max_bytes
        self.chat_bytes = chat_bytes or max_bytes
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if is_document_upload(scope):
            limit = self.document_bytes
        elif scope.get("path", "") in CHAT_BODY_PATHS:
            limit = self.chat_bytes
        else:
            limit = self.default_bytes
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
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
                await _send_error(send, 413, "payload_too_large", self._message(max_bytes))
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before finishing its body
            body = message.get("body", b"")
            size += len(body)
            if size > max_bytes:
                await _send_error(send, 413, "payload_too_large", self._message(max_bytes))
                return
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

        await self.app(scope, replay, send)

    @staticmethod
    def _message(max_bytes: int) -> str:
        return f"request body larger than {max_bytes} bytes"


class TimeoutMiddleware:
    """504 when a route has not started its response within its time; a stream, once started, is not cut."""

    def __init__(self, app: ASGIApp, default_s: float, chat_s: float) -> None:
        self.app = app
        self.default_s = default_s
        self.chat_s = chat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        long = classify(scope.get("path", "")) is RouteClass.chat or is_document_upload(scope)
        limit = self.chat_s if long else self.default_s
        started = False

        async def send_marking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(limit) as deadline:
                await self.app(scope, receive, send_marking)
        except TimeoutError:
            if started:
                raise
            await _send_error(send, 504, "timeout", f"no response within {limit:g} s")


class RateLimitMiddleware:
    """Charges every request to its client and route class; 429 with Retry-After when over.

    It runs before authentication, so it asks ``verified`` (the gateway's principal cache: a local
    lookup) whether the bearer credential has been verified; only then is the request charged to the
    credential and its user (see :func:`services.gateway.ratelimit.client_for`). The first request of a
    credential in each cache period is charged to the IP: the price of adding no round trip here.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        proxies: TrustedProxies,
        verified: Callable[[str], auth_pb2.Principal | None],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.proxies = proxies
        self.verified = verified

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope.get("headers", ()) if k in (b"authorization", b"x-forwarded-for")}
        peer = (scope.get("client") or ("unknown", 0))[0]
        forwarded = headers.get(b"x-forwarded-for")
        ip = self.proxies.client_ip(peer, forwarded.decode("latin-1") if forwarded else None)
        # Routes forward the same address to auth (deps.client_ip): resolved once, here.
        scope.setdefault("state", {})[CLIENT_IP_STATE] = ip
        route_class = classify(scope.get("path", ""))
        authorization = headers.get(b"authorization")
        credential = bearer_token(authorization.decode("latin-1") if authorization else None)
        principal = self.verified(credential) if credential else None
        client = client_for(route_class, principal, credential, ip)
        try:
            outcome = await self.limiter.hit(route_class, client)
        except RateLimiterUnavailable:
            await _send_error(send, 503, "rate_limiter_unavailable", "rate limiting is unavailable; try again")
            return
        if outcome is None:
            await self.app(scope, receive, send)
            return
        if isinstance(outcome, Decision):
            await _send_error(
                send,
                429,
                "rate_limit_exceeded",
                f"Rate limit exceeded: {outcome.description}",
                headers=[*_limit_headers(outcome), (b"retry-after", str(outcome.retry_after).encode())],
                extra={"retry_after": outcome.retry_after},
            )
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = await outcome.decision()
                if decision is not None:
                    message["headers"] = [*message.get("headers", ()), *_limit_headers(decision)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            outcome.cancel()  # a request that ended without answering never reads its numbers


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
