"""A gRPC server with one unary method (raw bytes in and out), for tests of server-wide behaviour:
error mapping, ping policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

METHOD = "/test.One/Do"
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


@asynccontextmanager
async def one_method_server(
    handler: Handler, *, options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] = ()
) -> AsyncIterator[str]:
    """Serve ``handler`` as ``METHOD`` on 127.0.0.1; yields the address."""
    server = grpc.aio.server(options=list(options), interceptors=list(interceptors))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.One", {"Do": grpc.unary_unary_rpc_method_handler(handler)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
