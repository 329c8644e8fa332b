"""The one server interceptor (services/common/grpc_server.py): the signed principal checked and set for
the call, the correlation id, the call metrics, for unary and streaming methods, with the wrapped
handler built once per method rather than on every call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.context import CORRELATION_METADATA_KEY, correlation_id_var
from services.common.errors import ERROR_CODE_KEY, NotFound
from services.common.grpc_server import ServiceInterceptor
from services.common.metrics import GRPC_SERVER_HANDLED
from services.common.principal import (
    PRINCIPAL_METADATA_KEY,
    Principal,
    PrincipalGate,
    PrincipalSigner,
    ReplayGuard,
    current_principal,
)

CALLER = Principal(user_id="u1", tenant_id="acme", role="member", scopes=("chat",), api_key_id="k1")
GUARDED = "/goblin.v1.Router/Probe"  # a service whose every method needs a principal
GUARDED_STREAM = "/goblin.v1.Router/ProbeStream"
PUBLIC = "/test.Open/Probe"  # a service outside PRINCIPAL_REQUIRED_SERVICES


def seen() -> bytes:
    """What the servicer sees of its call: the principal's tenant and the correlation id."""
    principal = current_principal()
    return f"{principal.tenant_id if principal else '-'}|{correlation_id_var.get('')}".encode()


async def probe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"missing":
        raise NotFound("no such thing")
    return seen()


async def probe_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield seen()


@asynccontextmanager
async def served(interceptor: ServiceInterceptor) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[interceptor])
    router = {
        "Probe": grpc.unary_unary_rpc_method_handler(probe),
        "ProbeStream": grpc.unary_stream_rpc_method_handler(probe_stream),
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler("goblin.v1.Router", router),
            grpc.method_handlers_generic_handler("test.Open", {"Probe": grpc.unary_unary_rpc_method_handler(probe)}),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.fixture
def signer() -> PrincipalSigner:
    return PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)


def handled(method: str, code: str) -> float:
    service, name = method.strip("/").split("/")
    return GRPC_SERVER_HANDLED.labels(service, name, code)._value.get()


async def test_a_signed_call_runs_with_its_principal_and_correlation_id(signer: PrincipalSigner) -> None:
    interceptor = ServiceInterceptor(PrincipalGate(signer.verifier(), ReplayGuard()))
    async with served(interceptor) as channel:
        call = channel.unary_unary(GUARDED)
        before = handled(GUARDED, "OK")
        for n in range(3):
            metadata = ((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)), (CORRELATION_METADATA_KEY, f"corr-{n}"))
            assert await call(b"", metadata=metadata, timeout=5) == f"acme|corr-{n}".encode()
        assert handled(GUARDED, "OK") == before + 3
        stream = channel.unary_stream(GUARDED_STREAM)
        metadata = ((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)), (CORRELATION_METADATA_KEY, "corr-s"))
        assert [item async for item in stream(b"", metadata=metadata, timeout=5)] == [b"acme|corr-s"] * 2


async def test_the_wrapped_handler_is_built_once_per_method(signer: PrincipalSigner) -> None:
    interceptor = ServiceInterceptor(PrincipalGate(signer.verifier(), ReplayGuard()))
    async with served(interceptor) as channel:
        wrappers = []
        for _ in range(3):
            await channel.unary_unary(GUARDED)(b"", metadata=((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)),))
            wrappers.append(interceptor._wrapped[GUARDED][1])
        assert wrappers[0] is wrappers[1] is wrappers[2]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_call_without_or_with_a_bad_principal_is_refused(signer: PrincipalSigner, stream: bool) -> None:
    interceptor = ServiceInterceptor(PrincipalGate(signer.verifier(), ReplayGuard()))
    method = GUARDED_STREAM if stream else GUARDED
    forged = PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60).sign(CALLER)
    replayed = signer.sign(CALLER)
    async with served(interceptor) as channel:
        await channel.unary_unary(GUARDED)(b"", metadata=((PRINCIPAL_METADATA_KEY, replayed),), timeout=5)
        before = handled(method, "UNAUTHENTICATED")
        for metadata in ((), ((PRINCIPAL_METADATA_KEY, forged),), ((PRINCIPAL_METADATA_KEY, replayed),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                if stream:
                    [item async for item in channel.unary_stream(method)(b"", metadata=metadata, timeout=5)]
                else:
                    await channel.unary_unary(method)(b"", metadata=metadata, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert handled(method, "UNAUTHENTICATED") == before + 3


async def test_no_principal_is_left_over_for_the_next_call(signer: PrincipalSigner) -> None:
    interceptor = ServiceInterceptor(PrincipalGate(signer.verifier(), ReplayGuard()))
    async with served(interceptor) as channel:
        await channel.unary_unary(GUARDED)(b"", metadata=((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)),))
        answer = await channel.unary_unary(PUBLIC)(b"", metadata=((CORRELATION_METADATA_KEY, "c2"),), timeout=5)
        assert answer == b"-|c2"


async def test_domain_errors_still_map_to_their_status_under_the_principal(signer: PrincipalSigner) -> None:
    interceptor = ServiceInterceptor(PrincipalGate(signer.verifier(), ReplayGuard()))
    async with served(interceptor) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            metadata = ((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)),)
            await channel.unary_unary(GUARDED)(b"missing", metadata=metadata, timeout=5)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(error.value.trailing_metadata() or ()).get(ERROR_CODE_KEY) == "not_found"


async def test_without_a_gate_no_principal_is_checked() -> None:
    async with served(ServiceInterceptor()) as channel:
        answer = await channel.unary_unary(GUARDED)(b"", timeout=5)
        assert answer.startswith(b"-|") and len(answer) > 2  # no principal; a correlation id of its own
