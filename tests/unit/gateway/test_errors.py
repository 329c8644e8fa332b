from __future__ import annotations

import grpc
import pytest

from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY
from services.gateway.errors import GRPC_TO_HTTP, api_error_from_grpc


def rpc_error(code: grpc.StatusCode, details: str, trailers: tuple = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=details)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNKNOWN, 502),
    ],
)
def test_status_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    assert api_error_from_grpc(rpc_error(code, "x")).status_code == status


def test_no_grpc_code_becomes_a_plain_500() -> None:
    assert all(status != 500 for status, _ in GRPC_TO_HTTP.values())


def test_service_error_code_and_retry_after_survive() -> None:
    error = api_error_from_grpc(
        rpc_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "queue full",
            ((ERROR_CODE_KEY, "inference_queue_full"), (RETRY_AFTER_KEY, "2.200")),
        )
    )
    assert error.status_code == 429
    assert error.error == "inference_queue_full"
    assert error.headers["Retry-After"] == "3"
    assert error.extra["retry_after"] == 3
    assert error.message == "queue full"


def test_unavailable_names_the_service_not_the_transport() -> None:
    error = api_error_from_grpc(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), service="auth"
    )
    assert error.message == "auth is unavailable"


def test_a_cooling_provider_is_named_with_when_it_is_tried_again_not_the_router() -> None:
    """The router answered (its own error code): its message says which provider and when, so an
    operator is not sent to the router, which is fine."""
    error = api_error_from_grpc(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE,
            "acme: circuit open after 5 consecutive failures; tried again in 27 s",
            ((ERROR_CODE_KEY, "circuit_open"), (RETRY_AFTER_KEY, "26.4")),
        ),
        service="router",
    )
    assert error.status_code == 503 and error.error == "circuit_open"
    assert error.message == "acme: circuit open after 5 consecutive failures; tried again in 27 s"
    assert "router" not in error.message
    assert error.headers["Retry-After"] == "27"
