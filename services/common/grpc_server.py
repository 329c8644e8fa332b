"""Bootstrap of every gRPC service: one function, :func:`run_service`, does the common work.

- JSON logging and OpenTelemetry, once per process;
- Prometheus on the service's metrics port;
- mutual TLS on the service's port: a client without a certificate from the suite CA is refused at
  the handshake (services.common.tls);
- ``grpc.health.v1`` (NOT_SERVING until :meth:`Service.start` has connected the dependencies,
  then SERVING while :meth:`Service.healthy` holds) and server reflection; health alone is also served
  in plaintext on the probe port, which serves nothing else (kubelet probes carry no certificate);
- one interceptor: the correlation id from metadata into the log context, the signed principal
  verified (services.common.principal), domain errors to status codes, call metrics;
- SIGTERM/SIGINT: NOT_SERVING, stop taking calls, drain for the grace period, close, flush telemetry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from pathlib import Path
from typing import Any, Protocol

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.context import CORRELATION_METADATA_KEY, correlation_id_var, new_correlation_id
from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY, GoblinError, Unavailable
from services.common.grpc_client import KEEPALIVE_MS
from services.common.logs import configure_logging
from services.common.metrics import GRPC_SERVER_HANDLED, GRPC_SERVER_LATENCY, start_metrics_server
from services.common.principal import (
    InvalidPrincipal,
    Principal,
    PrincipalGate,
    verified_principal_var,
)
from services.common.process import freeze_startup_heap
from services.common.settings import ConfigError, ServiceSettings
from services.common.stores import STORE_UNREACHABLE, start_with_backoff
from services.common.telemetry import instrument_libraries, setup_telemetry, shutdown_telemetry
from services.common.tls import load_grpc_tls

log = logging.getLogger(__name__)

HEALTH_POLL_S = 1.0
UDS_MODE = 0o660
START_RETRY_MAX_S = 10.0


class Service(Protocol):
    """What a service hands to :func:`run_service`."""

    name: str  # short name: "router", "auth", ...
    grpc_service_names: list[str]  # full names, e.g. "goblin.v1.Router", for health and reflection

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers. Called before the server starts; dependencies are not connected yet."""

    async def start(self) -> None:
        """Connect dependencies. Raising means not ready yet: it is retried with backoff."""

    async def healthy(self) -> bool:
        """Polled every second once started; False flips health to NOT_SERVING until it is True again."""

    async def stop(self) -> None:
        """Release dependencies after the server has drained."""


# Characters: percent-encoded, a 4-byte character takes 12 bytes of metadata, so 500 stay under 8 KiB.
MAX_ERROR_MESSAGE = 500


def _split_method(full_method: str) -> tuple[str, str]:
    # "/goblin.v1.Router/Chat" -> ("goblin.v1.Router", "Chat")
    _, service, method = full_method.split("/", 2)
    return service, method


async def _abort_with(context: grpc.aio.ServicerContext, exc: GoblinError) -> None:
    trailers: list[tuple[str, str]] = [(ERROR_CODE_KEY, exc.code)]
    if exc.retry_after is not None:
        trailers.append((RETRY_AFTER_KEY, f"{exc.retry_after:.3f}"))
    context.set_trailing_metadata(tuple(trailers))
    # The message travels in grpc-message metadata, which the peer refuses past 8 KiB (the call then
    # fails as something else); an error that quotes client input must never get there.
    message = exc.message if len(exc.message) <= MAX_ERROR_MESSAGE else exc.message[: MAX_ERROR_MESSAGE - 3] + "..."
    await context.abort(exc.status, message)


def _correlation_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == CORRELATION_METADATA_KEY and value:
            return value[:128]
    return new_correlation_id()


def _code_of(context: grpc.aio.ServicerContext, failed: BaseException | None) -> str:
    if isinstance(failed, GoblinError):
        return failed.status.name
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failed is not None:
        return grpc.StatusCode.INTERNAL.name if not isinstance(failed, asyncio.CancelledError) else "CANCELLED"
    return grpc.StatusCode.OK.name


def server_options(client_keepalive_ms: int = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """The gRPC server's options: message sizes, and a ping policy that accepts our clients' keepalive
    pings (every ``client_keepalive_ms``, with or without calls in flight) instead of gRPC's default,
    which allows one ping per 5 minutes and then closes the connection with GOAWAY "too_many_pings"."""
    return [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", client_keepalive_ms // 2),
        ("grpc.http2.max_ping_strikes", 0),  # never GOAWAY a peer for pinging
    ]


def _store_away(method: str, exc: BaseException) -> Unavailable:
    """A store went away mid-call: the caller may retry shortly (UNAVAILABLE), it is not a bug (UNKNOWN)."""
    log.warning("%s: a store is unreachable (%s: %s)", method, type(exc).__name__, exc)
    return Unavailable("a store this service needs is unreachable; retry shortly", retry_after=2)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Correlation id, the signed principal, domain-error mapping and call metrics for every method of
    every servicer, in one interceptor.

    The wrapped method handler is built once per method and reused (a handler's wrappers depend only on
    the method; what is per call, the correlation id and the principal, is read from the call's context
    when it runs): before, two interceptors each rebuilt the handler on every call. With ``gate`` every
    call's principal is checked before the servicer runs (refused with UNAUTHENTICATED) and is
    :func:`~services.common.principal.current_principal` while it runs; without (tests of the error
    mapping alone) no principal is checked or set.
    """

    def __init__(self, gate: PrincipalGate | None = None) -> None:
        self.gate = gate
        # method -> (the servicer's handler, our wrapper of it): the handler's identity is checked on
        # every call, so a handler registered anew is wrapped anew.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        cached = self._wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if full_method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        wrapped = self._wrap(handler, full_method)
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        service, method = _split_method(full_method)
        gate = self.gate
        latency = GRPC_SERVER_LATENCY.labels(service, method)
        handled: dict[str, Any] = {}  # code -> its counter, bound on first use (no series left at zero)

        def admit(context: grpc.aio.ServicerContext) -> Token[Principal | None] | None:
            # Raises InvalidPrincipal when refused; the call is then answered UNAUTHENTICATED.
            if gate is None:
                return None
            return verified_principal_var.set(gate.check(full_method, context.invocation_metadata()))

        def finish(context: grpc.aio.ServicerContext, started: float, failed: BaseException | None) -> None:
            code, elapsed = _code_of(context, failed), time.perf_counter() - started
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = GRPC_SERVER_HANDLED.labels(service, method, code)
            counter.inc()
            latency.observe(elapsed)
            # One line per call at DEBUG (off by default: it would double the log volume), still under the
            # call's correlation id, so LOG_LEVEL=DEBUG shows a request's path through every service.
            log.debug(
                "%s/%s %s",
                service,
                method,
                code,
                extra={
                    "grpc_service": service,
                    "grpc_method": method,
                    "grpc_code": code,
                    "duration_ms": elapsed * 1000,
                },
            )

        async def answer_failure(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            """Abort the call for a refused principal, a domain error or a store gone away (each raises
            AbortError); anything else is logged as a bug unless it is an abort already, and re-raised."""
            if isinstance(exc, InvalidPrincipal):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            elif isinstance(exc, GoblinError):
                await _abort_with(context, exc)
            elif isinstance(exc, STORE_UNREACHABLE):
                await _abort_with(context, _store_away(full_method, exc))
            elif not isinstance(exc, grpc.aio.AbortError):
                log.exception("unhandled error in %s", full_method)

        if handler.unary_unary or handler.stream_unary:
            behavior = handler.unary_unary or handler.stream_unary

            async def unary_response(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                token = correlation_id_var.set(_correlation_id(context))
                started, failed, admitted = time.perf_counter(), None, None
                try:
                    admitted = admit(context)
                    return await behavior(request_or_iterator, context)
                except Exception as exc:
                    failed = exc
                    await answer_failure(context, exc)
                    raise
                finally:
                    if admitted is not None:
                        verified_principal_var.reset(admitted)
                    finish(context, started, failed)
                    correlation_id_var.reset(token)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary_response, handler.request_deserializer, handler.response_serializer)

        streaming = handler.unary_stream or handler.stream_stream

        async def stream_response(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            token = correlation_id_var.set(_correlation_id(context))
            started, failed, admitted = time.perf_counter(), None, None
            try:
                admitted = admit(context)
                async for item in streaming(request_or_iterator, context):
                    yield item
            except Exception as exc:
                failed = exc
                await answer_failure(context, exc)
                raise
            finally:
                if admitted is not None:
                    verified_principal_var.reset(admitted)
                finish(context, started, failed)
                correlation_id_var.reset(token)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream_response, handler.request_deserializer, handler.response_serializer)


def _set_health(servicer: health.aio.HealthServicer, names: list[str], serving: bool) -> Awaitable[None]:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    return asyncio.gather(*(servicer.set(name, status) for name in ["", *names]))


async def _watch_health(service: Service, servicer: health.aio.HealthServicer, stopping: asyncio.Event) -> None:
    serving = True
    while not stopping.is_set():
        try:
            ok = await asyncio.wait_for(service.healthy(), timeout=HEALTH_POLL_S * 2)
        except Exception as exc:
            log.warning("%s health check failed: %s", service.name, exc)
            ok = False
        if ok != serving:
            serving = ok
            log.warning("%s is now %s", service.name, "SERVING" if ok else "NOT_SERVING")
            await _set_health(servicer, service.grpc_service_names, ok)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=HEALTH_POLL_S)
        except TimeoutError:
            pass


class StartupRefused(Exception):
    """The service must not start (another instance holds the lock, a model file is missing...).
    ``str()`` is the one line shown to the operator."""


async def serve(make_service: Callable[[], Service], settings: ServiceSettings) -> None:
    """Build the service inside the running event loop (gRPC channels bind to the loop that exists when
    they are made), run it until SIGTERM/SIGINT, then shut down gracefully."""
    instrument_libraries()  # before the service makes its channels to its peers
    try:
        service = make_service()
    except ConfigError as exc:  # e.g. its TLS files for the channels it opens to its peers
        raise StartupRefused(str(exc)) from None
    configure_logging(service.name, settings.log_level)
    setup_telemetry(service.name)
    start_metrics_server(settings.bind_host, settings.metrics_port)

    server = grpc.aio.server(
        # The process's verify key is loaded here: in production a missing key stops start-up before
        # the server listens.
        interceptors=[ServiceInterceptor(PrincipalGate.for_this_process())],
        options=server_options(),
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service.register(server)
    names = list(service.grpc_service_names)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    await _set_health(health_servicer, names, serving=False)
    try:
        tls = load_grpc_tls(settings, service.name)
    except ConfigError as exc:
        raise StartupRefused(f"{service.name}: {exc}") from None
    address = settings.grpc_listen_address()
    if address.startswith("unix:"):
        # The socket's directory must exist; its mode is set once bound (gRPC creates it with the umask).
        Path(address.removeprefix("unix:")).parent.mkdir(parents=True, exist_ok=True)
    if server.add_secure_port(address, tls.server_credentials()) == 0:
        raise SystemExit(f"goblin: {service.name} cannot listen on {address}")
    # Health only, in plaintext: the same servicer, so probes see exactly what mTLS clients see.
    probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probe)
    probe_address = f"{settings.bind_host}:{settings.probe_port}"
    if probe.add_insecure_port(probe_address) == 0:
        raise SystemExit(f"goblin: {service.name} cannot listen on {probe_address} (probe port)")
    await server.start()
    await probe.start()
    if address.startswith("unix:"):
        # Owner and group only (the systemd units put the router in the goblin group), whatever the umask.
        os.chmod(address.removeprefix("unix:"), UDS_MODE)
    log.info(
        "%s listening",
        service.name,
        extra={"grpc_address": address, "probe_address": probe_address, "metrics_port": settings.metrics_port},
    )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    watcher: asyncio.Task[None] | None = None
    started = await start_with_backoff(service.start, service.name, stopping=stopping, max_delay_s=START_RETRY_MAX_S)
    if started:
        freeze_startup_heap()
        await _set_health(health_servicer, names, serving=True)
        log.info("%s ready", service.name)
        watcher = asyncio.create_task(_watch_health(service, health_servicer, stopping))

    await stopping.wait()
    log.info("%s stopping", service.name)
    await health_servicer.enter_graceful_shutdown()
    if watcher is not None:
        watcher.cancel()
    await asyncio.gather(server.stop(settings.grpc_grace_s), probe.stop(settings.grpc_grace_s))
    if started:
        await service.stop()
    shutdown_telemetry()
    log.info("%s stopped", service.name)


def run_service(make_service: Callable[[], Service], settings: ServiceSettings) -> None:
    """Entry point of every ``python -m services.<name>``: exit 1 with one line if start-up is refused."""
    try:
        # uvloop, as under the gateway's uvicorn: gRPC's asyncio stack runs on any asyncio loop, and
        # uvloop's transports and callbacks cost less per request (bench/RESULTS.md, Router).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(make_service, settings))
    except StartupRefused as exc:
        print(f"goblin: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
