"""The gateway's one error model: every failure leaves as ``{"error", "message", "correlation_id"}``.

gRPC status codes and domain errors are mapped to HTTP here and nowhere else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.context import CORRELATION_HEADER, current_correlation_id
from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY, GoblinError

log = logging.getLogger(__name__)

GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "failed_precondition"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthorized"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "resource_exhausted"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}

HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limit_exceeded",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}


# The longest wait the gateway will tell a client, whatever a backend (or a provider behind it) says,
# "inf" included: a day, as daily quotas and budgets reset at the next midnight UTC.
MAX_RETRY_AFTER_S = 86_400


def retry_after_header(seconds: float | str) -> int | None:
    """Whole seconds for a ``Retry-After`` header (rounded up, 1 to :data:`MAX_RETRY_AFTER_S`), or None
    when the value is not a number at all (``nan``, garbage): then the header is left out."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    return math.ceil(min(MAX_RETRY_AFTER_S, max(1.0, value)))  # clamped first: ceil(inf) raises


class ApiError(Exception):
    """Raise from a route to answer with the JSON error body."""

    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(error: str, message: str, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one JSON error shape: ``{"error", "message", "correlation_id", ...extra}``."""
    return {"error": error, "message": message, "correlation_id": current_correlation_id(), **(extra or {})}


def error_response(
    status_code: int,
    error: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    correlation_id = current_correlation_id()
    response = JSONResponse(error_body(error, message, extra=extra), status_code=status_code, headers=headers)
    if correlation_id:
        response.headers[CORRELATION_HEADER] = correlation_id
    return response


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for k, v in error.trailing_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def api_error_from_grpc(error: grpc.aio.AioRpcError, *, service: str = "") -> ApiError:
    """The HTTP answer for a failed gRPC call, keeping the service's own error code when it sent one."""
    status, default_code = GRPC_TO_HTTP.get(error.code(), (502, "upstream_error"))
    code = _trailer(error, ERROR_CODE_KEY) or default_code
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    retry_after = _trailer(error, RETRY_AFTER_KEY)
    seconds = retry_after_header(retry_after) if retry_after is not None else None
    if seconds is not None:
        headers["Retry-After"] = str(seconds)
        extra["retry_after"] = seconds
    message = error.details() or error.code().name.lower()
    own_code = _trailer(error, ERROR_CODE_KEY) is not None
    if status >= 500 and error.code() == grpc.StatusCode.UNAVAILABLE and not own_code:
        # The transport's words (no connection to the service): name the service instead. A service that
        # answered with its own code (a provider's circuit is open, a store is away) keeps its message.
        message = f"{service or 'a backend service'} is unavailable"
    elif error.code() not in GRPC_TO_HTTP and _trailer(error, ERROR_CODE_KEY) is None:
        # UNKNOWN, INTERNAL, DATA_LOSS without the service's own error code: not a GoblinError it
        # raised for the client, but a failure, whose details gRPC fills with the exception's text
        # (class, message, perhaps a host or a path). The log keeps them; the client gets none.
        log.warning("%s failed: %s %s", service or "a backend service", error.code().name, error.details())
        message = f"{service or 'a backend service'} failed; quote the correlation id to report it"
    return ApiError(status, code, message, headers=headers, extra=extra)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.error, exc.message, headers=exc.headers, extra=exc.extra)


# Every backend call goes through services.gateway.clients, which raises ApiError; this is the net
# for a call that bypassed them, so that it still answers with its mapped status rather than a 500.
async def _grpc_error(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
    api = api_error_from_grpc(exc)
    return error_response(api.status_code, api.error, api.message, headers=api.headers, extra=api.extra)


async def _domain_error(_: Request, exc: GoblinError) -> JSONResponse:
    status, _code = GRPC_TO_HTTP.get(exc.status, (500, "internal_error"))
    seconds = retry_after_header(exc.retry_after) if exc.retry_after else None
    headers = {"Retry-After": str(seconds)} if seconds is not None else None
    return error_response(status, exc.code, exc.message, headers=headers)


def validation_message(errors: Sequence[Any]) -> str:
    """The 400 message of a body that failed validation (FastAPI's error list, ``loc`` from ``body``)."""
    problems = []
    for err in errors:
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") in (
            "model_attributes_type",
            "dict_type",
        ):
            problems.append("the request body must be a JSON object (Content-Type: application/json)")
            continue
        if err.get("type") == "json_invalid":
            problems.append(f"the request body is not valid JSON: {err.get('ctx', {}).get('error', 'parse error')}")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(problems) or "invalid request"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(400, "invalid_request", validation_message(exc.errors()))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


# Text reaches the gateway as JSON, where "\ud800" is a valid escape for a lone surrogate: Python
# keeps it in a str, and the first UTF-8 encoding of it (protobuf, a log line) fails. Server-made
# text is always valid Unicode, so this is the client's input: a 400 it can fix, not a 500.
# (Any other unhandled exception is answered by middleware.EdgeMiddleware.)
async def _invalid_text(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
    log.info("request text is not valid Unicode: %s", exc.reason)
    return error_response(
        400,
        "invalid_request",
        "the request contains text that is not valid Unicode (a lone surrogate such as \\ud800)",
    )


# The app's exception handlers, by the exception class each answers: installed on the FastAPI app,
# and looked up the same way (the class's MRO) by the pure-ASGI routes (api/asgi_routes.py).
ERROR_HANDLERS: dict[type[BaseException], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    ApiError: _api_error,
    grpc.aio.AioRpcError: _grpc_error,
    GoblinError: _domain_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    UnicodeEncodeError: _invalid_text,
}


async def handled_error(request: Request, exc: BaseException) -> JSONResponse | None:
    """The answer the app's handlers give ``exc`` (as Starlette picks one: the nearest class in its
    MRO), or None when no handler takes it."""
    for cls in type(exc).__mro__:
        handler = ERROR_HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Every handler of :data:`ERROR_HANDLERS` on ``app``."""
    for cls, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(cls, handler)
