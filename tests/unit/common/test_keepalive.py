"""A long call (a slow local generation, a long stream) on a connection whose client pings to keep it
alive must not be cut by the server's ping policy: gRPC's default answers the third ping within five
minutes with GOAWAY "too_many_pings", and the call fails as UNAVAILABLE (seen as 503s at exactly ~120 s
with our 30 s keepalive). Here the client pings every second, so the default fails within seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.grpc_server import server_options
from tests.unit.common.one_method import METHOD, one_method_server

CLIENT_KEEPALIVE_MS = 1000
CALL_S = 6.0


async def slow_call(options: list[tuple[str, int]]) -> grpc.StatusCode:
    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(CALL_S)
        return b"done"

    client_options = [
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with one_method_server(handler, options=options) as address:
        async with grpc.aio.insecure_channel(address, options=client_options) as channel:
            try:
                await channel.unary_unary(METHOD)(b"", timeout=CALL_S + 10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], grpc.StatusCode.UNAVAILABLE),  # gRPC's default policy: the bug, shown
        (server_options(CLIENT_KEEPALIVE_MS), grpc.StatusCode.OK),  # ours
    ],
    ids=["grpc-default", "ours"],
)
async def test_keepalive_pings_do_not_cut_a_long_call(options: list, expected: grpc.StatusCode) -> None:
    assert await slow_call(options) == expected
