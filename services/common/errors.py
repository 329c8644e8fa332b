"""Domain errors, raised by service logic, which knows nothing of gRPC or HTTP.

The gRPC interceptor (:mod:`services.common.grpc_server`) turns them into status codes in one
place; the gateway turns status codes into HTTP responses in one place.
"""

from __future__ import annotations

import grpc


class GoblinError(Exception):
    """Base of every error a service means to report to its caller."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.retry_after = retry_after


class InvalidArgument(GoblinError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_request"


class NotFound(GoblinError):
    status = grpc.StatusCode.NOT_FOUND
    code = "not_found"


class AlreadyExists(GoblinError):
    status = grpc.StatusCode.ALREADY_EXISTS
    code = "already_exists"


class Unauthenticated(GoblinError):
    status = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthorized"


class PermissionDenied(GoblinError):
    status = grpc.StatusCode.PERMISSION_DENIED
    code = "forbidden"


class ResourceExhausted(GoblinError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "resource_exhausted"


class FailedPrecondition(GoblinError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    code = "failed_precondition"


class Unavailable(GoblinError):
    status = grpc.StatusCode.UNAVAILABLE
    code = "service_unavailable"


class DeadlineExceeded(GoblinError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED
    code = "timeout"


class Cancelled(GoblinError):
    status = grpc.StatusCode.CANCELLED
    code = "cancelled"


# Trailing metadata keys that carry what a status code alone cannot.
ERROR_CODE_KEY = "goblin-error-code"
RETRY_AFTER_KEY = "retry-after"


_BY_STATUS: dict[grpc.StatusCode, type[GoblinError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
    )
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> GoblinError:
    """A peer's gRPC failure as a domain error, keeping its error code and retry-after, so a service
    that relays a call (router -> inference) passes the caller the same answer."""
    trailers = {k: v for k, v in (error.trailing_metadata() or ())}
    retry_after = trailers.get(RETRY_AFTER_KEY)
    cls = _BY_STATUS.get(error.code(), GoblinError)
    if cls is GoblinError:
        # INTERNAL, UNKNOWN, DATA_LOSS...: the peer failed; say so without leaking its internals.
        return Unavailable(f"upstream failure ({error.code().name})", code="upstream_error")
    return cls(
        error.details() or error.code().name.lower(),
        code=trailers.get(ERROR_CODE_KEY) or None,
        retry_after=float(retry_after) if retry_after else None,
    )
