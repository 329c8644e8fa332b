"""Real in-process gRPC servers with scripted servicers, for testing the gateway's clients and
dependencies over a real channel (status codes and trailers travel as they do in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from goblin.v1 import auth_pb2_grpc, router_pb2_grpc
from services.common.topology import BACKEND_SERVICES


@asynccontextmanager
async def grpc_server(
    auth: auth_pb2_grpc.AuthServicer | None = None, router: router_pb2_grpc.RouterServicer | None = None
) -> AsyncIterator[str]:
    """A server on a free loopback port with the given servicers; yields its address."""
    server = grpc.aio.server()
    if auth is not None:
        auth_pb2_grpc.add_AuthServicer_to_server(auth, server)
    if router is not None:
        router_pb2_grpc.add_RouterServicer_to_server(router, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def every_service_at(address: str) -> dict[str, str]:
    """Peer addresses with every backend service at ``address``."""
    return dict.fromkeys(BACKEND_SERVICES, address)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str, trailers: tuple = ()) -> None:
    """Fail the call as a Goblin service does: status, details and the error-code trailers."""
    if trailers:
        context.set_trailing_metadata(trailers)
    await context.abort(code, details)
