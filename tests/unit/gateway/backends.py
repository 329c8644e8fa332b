"""Real in-process gRPC servers with scripted servicers, for testing the gateway's clients and
dependencies over a real channel (status codes and trailers travel as they do in production)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from goblin.v1 import auth_pb2_grpc, router_pb2_grpc
from services.common.tls import GrpcTls, cert_pem, key_pem, make_ca, make_leaf
from services.common.topology import BACKEND_SERVICES


@functools.cache
def scripted_tls_files() -> tuple[Path, Path, Path]:
    """(CA, certificate, key) files of a test CA whose one certificate names every service, so one
    scripted server can stand in for all of them behind mutual TLS."""
    directory = Path(tempfile.mkdtemp(prefix="goblin-test-tls-"))
    ca, ca_key = make_ca("Goblin test CA")
    cert, key = make_leaf(ca, ca_key, "gateway", also=BACKEND_SERVICES)
    files = (directory / "ca.pem", directory / "leaf.pem", directory / "leaf-key.pem")
    for path, data in zip(files, (cert_pem(ca), cert_pem(cert), key_pem(key)), strict=True):
        path.write_bytes(data)
    return files


def scripted_tls() -> GrpcTls:
    """The test CA's identity, as a client or a server presents it."""
    return GrpcTls(*(path.read_bytes() for path in scripted_tls_files()))


def scripted_tls_settings() -> dict[str, Path]:
    """Settings fields pointing a service's gRPC TLS at the test CA's files."""
    ca, cert, key = scripted_tls_files()
    return {"grpc_tls_ca_file": ca, "grpc_tls_cert_file": cert, "grpc_tls_key_file": key}


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
    port = server.add_secure_port("127.0.0.1:0", scripted_tls().server_credentials())
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
