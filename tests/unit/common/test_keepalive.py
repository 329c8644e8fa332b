"""A long call (a slow local generation, a long stream) on a connection whose client pings to keep it
alive must not be cut by the server's ping policy: gRPC's default answers the third ping within five
minutes with GOAWAY "too_many_pings", and the call fails as UNAVAILABLE (seen as 503s at exactly ~120 s
with our 30 s keepalive). Here the client pings every second, so the default fails within seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.grpc_server import server_options

CLIENT_KEEPALIVE_MS = 1000
CALL_S = 6.0


async def slow_call(options: list[tuple[str, int]]) -> grpc.StatusCode:
    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(CALL_S)
        return b"done"

    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Slow", {"Do": grpc.unary_unary_rpc_method_handler(handler)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client_options = [("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS), ("grpc.keepalive_timeout_ms", 5000)]
    client_options.append(("grpc.http2.max_pings_without_data", 0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options) as channel:
            try:
                await channel.unary_unary("/test.Slow/Do")(b"", timeout=CALL_S + 10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
    finally:
        await server.stop(None)


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
