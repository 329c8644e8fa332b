"""Typed provider failures, and what the router does about each kind.

Every provider error is also a domain error of the right gRPC status (the interceptor maps it), with
three flags the router acts on:

- ``retryable``: the same provider may well answer if asked again shortly (5xx, timeouts, 429);
- ``fallback``: the next candidate model may answer (anything that is not the caller's own fault);
- ``breaker``: the failure counts against a circuit breaker: the model deployment's, or, when
  ``provider_wide`` (no connection could be made: refused, unreachable, DNS, a connect timeout, TLS),
  the provider's own. A request that reached the provider names a model; a connection that was never
  made says nothing about any one model, and would fail the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GoblinError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)


class ProviderError(GoblinError):
    retryable = False
    fallback = True
    breaker = True
    provider_wide = False

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int = 0,
        provider_wide: bool = False,
    ) -> None:
        super().__init__(f"{provider}: {message}", retry_after=retry_after)
        self.provider = provider
        self.http_status = http_status
        self.provider_wide = provider_wide  # no connection was made: no model was asked


class ProviderUnavailable(ProviderError, Unavailable):
    """5xx, overloaded, connection refused or reset."""

    code = "provider_unavailable"
    retryable = True


class ProviderTimeout(ProviderError, DeadlineExceeded):
    code = "provider_timeout"
    retryable = True


class ProviderRateLimited(ProviderError, ResourceExhausted):
    """429: retried after its Retry-After when that is short, else the next candidate is tried."""

    code = "provider_rate_limited"
    retryable = True


class ProviderAuthError(ProviderError, Unavailable):
    """The provider refused the configured key (401/403): an operator problem, not the caller's."""

    code = "provider_auth_failed"


class ProviderBadResponse(ProviderError, Unavailable):
    """The provider answered something that is not its documented format."""

    code = "provider_bad_response"


class ProviderRejected(ProviderError, InvalidArgument):
    """The provider refused the request itself (400, 413, 422): another provider would too."""

    code = "provider_invalid_request"
    fallback = False
    breaker = False


class ProviderModelNotFound(ProviderError, NotFound):
    code = "model_not_found"
    breaker = False


class ProviderNotConfigured(ProviderError, FailedPrecondition):
    code = "provider_not_configured"
    breaker = False


class CircuitOpen(ProviderError, Unavailable):
    code = "circuit_open"
    breaker = False


@dataclass(frozen=True)
class FailurePolicy:
    retryable: bool
    fallback: bool
    breaker: bool
    provider_wide: bool = False


_CALLER_FAULT = FailurePolicy(retryable=False, fallback=False, breaker=False)


def failure_policy(exc: BaseException) -> FailurePolicy:
    """What to do after ``exc``: provider errors say it themselves; errors relayed from the local
    inference service are judged by their kind, and count against its provider-wide circuit: one
    process serves the local models, and when it fails they all do."""
    if isinstance(exc, ProviderError):
        return FailurePolicy(exc.retryable, exc.fallback, exc.breaker, exc.provider_wide)
    if isinstance(
        exc, InvalidArgument | NotFound | FailedPrecondition | PermissionDenied | Unauthenticated | Cancelled
    ):
        return _CALLER_FAULT
    if isinstance(exc, ResourceExhausted):
        # The local queue is full: backpressure, not a fault. Asking again at once only adds load.
        return FailurePolicy(retryable=False, fallback=True, breaker=False)
    if isinstance(exc, DeadlineExceeded):
        return FailurePolicy(retryable=False, fallback=True, breaker=True, provider_wide=True)
    if isinstance(exc, Unavailable):
        return FailurePolicy(retryable=True, fallback=True, breaker=True, provider_wide=True)
    return FailurePolicy(retryable=False, fallback=True, breaker=True, provider_wide=True)
