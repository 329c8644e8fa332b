"""The router's per-request parts, old way against new, in one process, alternated round by round so
that the shared machine's drift hits both alike: CPU microseconds per operation (process time of this
process only; the fake provider's own work is not counted).

- the signed principal's verification: OpenSSL through ``cryptography`` with ``json`` (before) and
  libsodium through PyNaCl with ``orjson`` (services.common.principal);
- the provider call of a non-streaming chat (a fake OpenAI provider in its own process, HTTP/1.1
  keep-alive): an ``httpx.Request`` through the ``httpx-aiohttp`` transport (before) and the request
  straight through that transport's aiohttp session (services.router.providers.http);
- the provider call of a streamed chat (the same fake, 7 content chunks sent at once): an
  ``httpx.Request`` through the transport, its ``Response`` read by ``aiter_lines`` into the line-based
  SSE parser (before), and the request straight through the aiohttp session, its chunks fed to the
  synchronous SSE decoder (services.router.providers.sse); CPU per whole stream, and of it the part
  before the first delta came (the request, the answer's head, the first event).

- the server interceptors of a unary call with a signed principal (a one-method gRPC server and its
  client in this process, plaintext): two interceptors (correlation/metrics, then the principal) each
  building the method's handler anew per call (before), and services/common/grpc_server.py's one
  interceptor with the wrapped handler built once per method; assertions signed ahead, outside the timing;
- the journal line of a routing row (services/common/journal.py): ``json.dumps`` (before) and orjson.

Run: ``python -m bench.router_micro`` (prints a markdown table; writes nothing).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any

import uvloop
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.gateway_micro import CALLS, ROUNDS, timed_async, timed_sync
from bench.results import micro_table
from bench.router_bench import FAKE_KEY, MODEL, fake_base_url, start_fake
from goblin_tools.suite import free_ports
from services.common.chat import Message, SamplingParams
from services.common.principal import InvalidPrincipal, Principal, PrincipalSigner, PrincipalVerifier, _unb64
from services.router.models import ModelInfo
from services.router.providers.base import CallContext
from services.router.providers.http import TRANSPORT_ERRORS, HttpOptions, error_from_response, transport_error
from services.router.providers.openai import OpenAICompatibleProvider
from services.router.providers.sse import SseEvent, sse_events

CALLER = Principal(user_id="3f0c5a2e-user", tenant_id="default", role="admin", scopes=("*",), api_key_id="key-1")


def openssl_verify(verifier: PrincipalVerifier, assertion: str) -> dict[str, Any]:
    """The verification as it was: OpenSSL's Ed25519 (cryptography), then json (claims checks apart,
    which are the same in both)."""
    body, _, signature = assertion.partition(".")
    try:
        verifier._key.verify(_unb64(signature), body.encode("ascii"))
        return json.loads(_unb64(body))
    except (InvalidSignature, ValueError):
        raise InvalidPrincipal("principal signature does not verify") from None


def principal_cases() -> dict[str, Callable[[], object]]:
    signer = PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)
    verifier = signer.verifier()
    assertion = signer.sign(CALLER)
    return {
        "principal: OpenSSL Ed25519 + json (before)": lambda: openssl_verify(verifier, assertion),
        "principal: libsodium Ed25519 + orjson (kept)": lambda: verifier._claims(*assertion.split(".")),
    }


async def provider_rounds(base_url: str, results: dict[str, list[float]]) -> None:
    """The provider call both ways, alternated, each on its own warm connection pool."""
    spec = ModelInfo(id=f"openai/{MODEL}", provider="openai", owned_by="openai")
    messages = [Message("system", "You are terse."), Message("user", "Say hello to the benchmark.")]
    params, context = SamplingParams(max_tokens=16), CallContext(correlation_id="c", tenant_id="t")
    direct = OpenAICompatibleProvider("openai", base_url, FAKE_KEY, HttpOptions())
    via_httpx = OpenAICompatibleProvider("openai", base_url, FAKE_KEY, HttpOptions())
    via_httpx._direct_session = lambda: None  # type: ignore[method-assign]
    cases = {
        "provider call: httpx.Request through the httpx-aiohttp transport (before)": via_httpx,
        "provider call: straight through the transport's aiohttp session (kept)": direct,
    }
    try:
        for provider in cases.values():
            for _ in range(50):  # warm: connections open, caches filled
                await provider.chat(spec, messages, params, context)
        for _ in range(ROUNDS):
            for name, provider in cases.items():
                results.setdefault(name, []).append(
                    await timed_async(lambda p=provider: p.chat(spec, messages, params, context))
                )
    finally:
        for provider in cases.values():
            await provider.aclose()


def journal_cases() -> dict[str, Callable[[], object]]:
    """A routing row's journal line, the old way (json.dumps) and services.common.journal.encode_row."""
    from services.common.journal import encode_row
    from services.router.ledger import RoutingRecord

    row = RoutingRecord(
        requested_model="openai/gpt-4o-mini",
        outcome="ok",
        provider="openai",
        model="gpt-4o-mini",
        correlation_id="c0ffee" * 5,
        tenant_id="default",
        user_hash="0123456789abcdef",
        api_key_id="key-1",
        policy="default",
        prompt_tokens=21,
        completion_tokens=16,
        cost_usd=0.0000123,
        latency_ms=3.217,
        fallback_chain=["openai/gpt-4o-mini"],
    ).row()
    assert json.loads(encode_row(row)) == json.loads(json.dumps(list(row)))
    return {
        "journal line of a routing row: json.dumps (before)": lambda: (
            json.dumps(list(row), separators=(",", ":")) + "\n"
        ).encode(),
        "journal line of a routing row: orjson (journal.encode_row)": lambda: encode_row(row),
    }


async def interceptor_rounds(results: dict[str, list[float]]) -> None:
    """A unary call with a signed principal through the server's interceptors, the old pair and the one."""
    import time

    import grpc

    from bench.secure_principal import PrincipalInterceptor
    from services.common.grpc_server import ServiceInterceptor
    from services.common.principal import PRINCIPAL_METADATA_KEY, PrincipalGate, ReplayGuard

    signer = PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=600)

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    def gate() -> PrincipalGate:
        return PrincipalGate(signer.verifier(), ReplayGuard())

    cases = {
        "server interceptors: two, the handler rebuilt per call (before)": [
            ServiceInterceptor(),
            PrincipalInterceptor(gate()),
        ],
        "server interceptors: one, the wrapped handler built once (grpc_server.py)": [ServiceInterceptor(gate())],
    }
    servers, calls = [], {}
    for name, interceptors in cases.items():
        server = grpc.aio.server(interceptors=interceptors)
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "goblin.v1.Router", {"Do": grpc.unary_unary_rpc_method_handler(handler)}
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        calls[name] = (channel, channel.unary_unary("/goblin.v1.Router/Do"))

    async def timed(call: Any) -> float:
        assertions = [((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)),) for _ in range(CALLS)]
        started = time.process_time()
        for metadata in assertions:
            await call(b"x" * 64, metadata=metadata)
        return (time.process_time() - started) / CALLS * 1e6

    class Context:
        """What the interceptors read of a call's context."""

        def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
            self.metadata = metadata

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.metadata

        def code(self) -> None:
            return None

    handler_of = grpc.unary_unary_rpc_method_handler(handler)
    details = SimpleNamespace(method="/goblin.v1.Router/Do", invocation_metadata=())

    def chain(interceptors: list[Any]) -> Any:
        async def continuation(details: Any) -> Any:
            return handler_of

        for interceptor in reversed(interceptors):
            continuation = partial(interceptor.intercept_service, continuation)
        return continuation

    async def timed_alone(intercept: Any) -> float:
        contexts = [Context(((PRINCIPAL_METADATA_KEY, signer.sign(CALLER)),)) for _ in range(CALLS)]
        started = time.process_time()
        for context in contexts:
            details.invocation_metadata = context.metadata
            wrapped = await intercept(details)
            await wrapped.unary_unary(b"x", context)
        return (time.process_time() - started) / CALLS * 1e6

    alone = {f"{name}, alone (no gRPC call)": chain(interceptors) for name, interceptors in cases.items()}
    try:
        for intercept in alone.values():
            await timed_alone(intercept)  # warm
        for _ in range(ROUNDS):
            for name, intercept in alone.items():
                results.setdefault(name, []).append(await timed_alone(intercept))
        for _, call in calls.values():
            await timed(call)  # warm
        for _ in range(ROUNDS):
            for name, (_, call) in calls.items():
                results.setdefault(name, []).append(await timed(call))
    finally:
        for channel, _ in calls.values():
            await channel.close()
        for server in servers:
            await server.stop(None)


class HttpxStreamProvider(OpenAICompatibleProvider):
    """The streamed provider call as it was: httpx's Request and Response, ``aiter_lines`` and the
    line-based SSE parser."""

    @asynccontextmanager
    async def post_sse(
        self, path: str, body: dict[str, Any], *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        response = await self._send(
            path, body, {"content-type": "application/json", "accept": "text/event-stream"}, params
        )
        if response.status_code >= 300:
            content = await self._read(response)
            raise error_from_response(self.name, response.status_code, response.headers, content)

        async def events() -> AsyncIterator[SseEvent]:
            try:
                async for event in sse_events(response.aiter_lines()):
                    yield event
            except TRANSPORT_ERRORS as exc:
                raise transport_error(self.name, exc) from None

        try:
            yield events()
        finally:
            await response.aclose()


async def stream_rounds(base_url: str, results: dict[str, list[float]]) -> None:
    """The streamed provider call both ways, alternated: CPU per whole stream and before its first delta."""
    spec = ModelInfo(id=f"openai/{MODEL}", provider="openai", owned_by="openai")
    messages = [Message("system", "You are terse."), Message("user", "Say hello to the benchmark.")]
    params, context = SamplingParams(max_tokens=16), CallContext(correlation_id="c", tenant_id="t")
    cases = {
        "provider stream: httpx Request/Response, aiter_lines, line parser (before)": HttpxStreamProvider(
            "openai", base_url, FAKE_KEY, HttpOptions()
        ),
        "provider stream: straight through the aiohttp session, SSE decoder (kept)": OpenAICompatibleProvider(
            "openai", base_url, FAKE_KEY, HttpOptions()
        ),
    }

    async def one(provider: OpenAICompatibleProvider) -> tuple[float, float]:
        started = time.process_time()
        first = 0.0
        async for delta in provider.stream(spec, messages, params, context):
            if not first:
                first = time.process_time()
            assert delta.text or delta.finish_reason
        return first - started, time.process_time() - started

    try:
        for provider in cases.values():
            for _ in range(50):
                await one(provider)
        for _ in range(ROUNDS):
            for name, provider in cases.items():
                firsts, wholes = 0.0, 0.0
                for _ in range(CALLS):
                    first, whole = await one(provider)
                    firsts, wholes = firsts + first, wholes + whole
                results.setdefault(f"{name}, whole stream", []).append(wholes / CALLS * 1e6)
                results.setdefault(f"{name}, to the first delta", []).append(firsts / CALLS * 1e6)
    finally:
        for provider in cases.values():
            await provider.aclose()


async def provider_and_stream_rounds(base_url: str, results: dict[str, list[float]]) -> None:
    await provider_rounds(base_url, results)
    await stream_rounds(base_url, results)


def main() -> None:
    sync_cases = {**principal_cases(), **journal_cases()}
    results: dict[str, list[float]] = {name: [] for name in sync_cases}
    for _ in range(ROUNDS):
        for name, fn in sync_cases.items():
            results[name].append(timed_sync(fn))
    uvloop.run(interceptor_rounds(results))
    port = free_ports(1)[0]
    fake = start_fake(port)
    try:
        uvloop.run(provider_and_stream_rounds(fake_base_url(port), results))
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    print(f"{ROUNDS} rounds of {CALLS} calls, load average {os.getloadavg()[0]:.1f}\n")
    print(micro_table(results, "part of a request"))


if __name__ == "__main__":
    main()
