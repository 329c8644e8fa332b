"""A store that went away mid-call is UNAVAILABLE to the caller (a 503 to be retried), never UNKNOWN
(which the gateway can only answer as 502): found by the faults suite with PostgreSQL stopped."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
import redis.exceptions

from services.common.errors import ERROR_CODE_KEY
from services.common.grpc_server import ServiceInterceptor
from tests.unit.common.one_method import METHOD, one_method_server


async def call_broken(exc: BaseException) -> grpc.aio.AioRpcError:
    """A one-method service whose handler raises ``exc``, behind our interceptor, called once."""

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise exc

    async with one_method_server(handler, interceptors=[ServiceInterceptor()]) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(METHOD)(b"", timeout=5)
    return caught.value


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(2, "No such file or directory"),  # asyncpg on a Unix socket whose server is gone
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        redis.exceptions.ConnectionError("Error 111 connecting"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_unreachable_store_is_unavailable_not_unknown(exc: BaseException) -> None:
    error = await call_broken(exc)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(error.trailing_metadata() or ()).get(ERROR_CODE_KEY) == "service_unavailable"


async def test_a_bug_is_still_unknown() -> None:
    assert (await call_broken(KeyError("oops"))).code() == grpc.StatusCode.UNKNOWN
