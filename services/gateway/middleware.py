"""The request envelope, as one pure ASGI middleware (no per-request task or body copy):
correlation id in and out, in-flight gauge, request metrics by route template, the access log line."""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.context import CORRELATION_HEADER, correlation_id_var, new_correlation_id
from services.gateway.errors import HTTP_CODES
from services.gateway.metrics import HTTP_429, HTTP_DURATION, HTTP_ERRORS, HTTP_IN_PROGRESS, HTTP_REQUESTS

access_log = logging.getLogger("goblin.access")
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


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/tasks/{task_id}``), never the raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class RequestEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            endpoint = route_template(scope)
            HTTP_REQUESTS.labels(method, endpoint, str(status_code)).inc()
            HTTP_DURATION.labels(method, endpoint).observe(elapsed)
            if status_code >= 400:
                HTTP_ERRORS.labels(method, endpoint, HTTP_CODES.get(status_code, str(status_code))).inc()
            if status_code == 429:
                HTTP_429.labels(endpoint).inc()
            access_log.info(
                "request_completed",
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "endpoint": endpoint,
                    "status_code": status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            correlation_id_var.reset(token)
