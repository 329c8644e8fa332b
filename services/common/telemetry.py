"""OpenTelemetry set up once per process.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set: spans are
exported over OTLP, sampled as ``OTEL_TRACES_SAMPLER`` says (by default every request and no background
work: :class:`_RequestRoots`), and everything a request touches is traced: gRPC servers and clients
(opentelemetry-instrumentation-grpc), Redis (opentelemetry-instrumentation-redis), Postgres
(:class:`TracedConnection`: the asyncpg instrumentation pins an older instrumentation core than the gRPC
one), the router's provider calls and the executor's task runs (spans of ours, :func:`span`), and the
gateway turns on FastAPI's own telemetry.

Without an exporter nobody could read a span, so nothing is instrumented, :func:`span` hands back one
shared no-op context and the tracer provider is never asked for anything: the request path pays
nothing for tracing, and the correlation id, which crosses every hop and is in every log line, ties a
request's logs together.

What spans may carry: ids, names of providers, models, methods and routes, status codes and counts.
Never prompt or answer text, document text, keys or tokens, and user ids only as
:func:`services.common.context.hash_user_id` makes them.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, Status, StatusCode

_provider: TracerProvider | None = None
_instrumented = False
_tracing = False
_tracer: trace.Tracer = trace.NoOpTracer()
# Handed out by span() when tracing is off: entering and leaving it costs two method calls.
_NO_SPAN: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
# A SQL text is a template with $n placeholders (values travel apart): capped, as a collector would.
MAX_STATEMENT = 1000


def instrument_libraries() -> None:
    """Instrument gRPC (servers and clients) and Redis when exporting; nothing otherwise. Called before
    a service builds its channels and clients (a channel made earlier would carry no trace context), so
    it comes before :func:`setup_telemetry`, which needs the service's name. Safe to call twice."""
    global _instrumented
    if _instrumented or not exporting():
        return
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer, filters
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Probes and reflection arrive every few seconds and say nothing about a request.
    untraced = filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection")))
    # Their tracers resolve to the provider setup_telemetry installs, whenever it does.
    GrpcAioInstrumentorServer(filter_=untraced).instrument()
    GrpcAioInstrumentorClient(filter_=untraced).instrument()
    # Commands are recorded as "SET ? ?": the instrumentation never records arguments (cached answers).
    RedisInstrumentor().instrument()
    _instrumented = True


def setup_telemetry(service: str) -> TracerProvider:
    """Install the tracer provider, exporting over OTLP when an endpoint is set, and instrument the
    libraries (:func:`instrument_libraries`) if that was not done yet. Safe to call twice."""
    global _provider, _tracing, _tracer
    if _provider is not None:
        return _provider
    resource = Resource.create({SERVICE_NAME: f"goblin-{service}"})
    if not exporting():
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # OTEL_TRACES_SAMPLER, when set, decides alone; by default a trace starts only at a request or a
    # task run (see _RequestRoots), never at a background query or a health probe.
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(root=_RequestRoots())
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument_libraries()
    _provider, _tracing = provider, True
    _tracer = provider.get_tracer("goblin")
    return provider


class _RequestRoots(Sampler):
    """Root spans only for work someone asked for: a server span (an HTTP request, a gRPC call) or a
    consumer span (a queued task's run). A client span with no parent is a service's own background work
    (a health poll, a budget sync, the executor's claim loop): each would be a one-span trace every
    second, so it is dropped, and so is everything under it."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind in (SpanKind.SERVER, SpanKind.CONSUMER):
            return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        return ALWAYS_OFF.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "GoblinRequestRoots"


def exporting() -> bool:
    """Whether spans go anywhere: an OTLP endpoint is configured."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracing() -> bool:
    """Whether this process records spans (set up, with an exporter). Code that would compute span
    attributes asks this first, so the untraced path computes nothing."""
    return _tracing


def shutdown_telemetry() -> None:
    """Flush spans still buffered; called on graceful shutdown."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A span of ours around a block, current inside it (children and outgoing calls hang under it);
    with ``parent``, under that context rather than the current one. Tracing off: a shared no-op, and the
    block gets None."""
    if not _tracing:
        return _NO_SPAN
    return _recording(name, attributes, kind, parent)


@contextlib.contextmanager
def _recording(
    name: str, attributes: Mapping[str, Any] | None, kind: SpanKind, parent: otel_context.Context | None
) -> Iterator[trace.Span]:
    # The SDK's own exception handling would copy the exception's message into the span (an error may
    # quote input): a failed span says the exception's type and, for our errors, their code.
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            code = getattr(exc, "code", None)
            if isinstance(code, str) and code:
                current.set_attribute("goblin.error_code", code)
            raise


def set_attributes(target: trace.Span | None, attributes: Mapping[str, Any]) -> None:
    """``attributes`` on ``target`` (what :func:`span` gave; None when not tracing), None values left out."""
    if target is not None:
        target.set_attributes({key: value for key, value in attributes.items() if value is not None})


def current_traceparent() -> str:
    """The current span's W3C ``traceparent``, to store with work picked up later (a queued task); ""
    when not tracing."""
    if not _tracing:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from(traceparent: str | None) -> otel_context.Context | None:
    """The context a stored ``traceparent`` names, to parent the spans of work done later; None when
    there is none (the work then starts a trace of its own)."""
    if not _tracing or not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def trace_id_hex() -> str:
    """The current span's trace id as 32 hex digits, or "" when no span is active."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


# The trace id of a request no span stands for (tracing off, or a probe left untraced): what the
# gateway answers in X-Trace-Id and its log lines carry, so the header always finds the request's logs.
request_trace_id_var: ContextVar[str] = ContextVar("request_trace_id", default="")
_HEX = frozenset("0123456789abcdef")


def request_trace_id(traceparent: bytes | None) -> str:
    """The id to answer a request with: its span's trace id; else the caller's own W3C trace id (their
    ``traceparent``), so their trace and our logs meet; else a new random one."""
    if _tracing:
        current = trace_id_hex()
        if current:
            return current
    if traceparent is not None and len(traceparent) == 55:
        candidate = traceparent[3:35].decode("latin-1")
        if _HEX.issuperset(candidate) and candidate != "0" * 32:
            return candidate
    # As OpenTelemetry's own id generator makes them (a syscall per request for os.urandom buys nothing).
    return f"{random.getrandbits(128) or 1:032x}"


def _operation(query: str) -> str:
    words = query.lstrip(" \n\t(").split(None, 1)
    return words[0].upper() if words else "SQL"


def _db_span(query: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    if not _tracing:
        return _NO_SPAN
    operation = _operation(query)
    return span(
        f"postgres {operation}",
        {"db.system.name": "postgresql", "db.operation.name": operation, "db.query.text": query[:MAX_STATEMENT]},
        kind=SpanKind.CLIENT,
    )


class TracedConnection(asyncpg.Connection):
    """An asyncpg connection whose statements are client spans (statement text only: the values
    travel apart and are never recorded). Pools use it while tracing (:func:`pg_connection_class`)."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _db_span(query):
            return await super().execute(query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        with _db_span(command):
            return await super().executemany(command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _db_span(query):
            return await super().fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _db_span(query):
            return await super().fetchval(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _db_span(query):
            return await super().fetchrow(query, *args, **kwargs)


def pg_connection_class() -> type[asyncpg.Connection]:
    """The connection class for a new pool: traced while tracing, asyncpg's own otherwise."""
    return TracedConnection if _tracing else asyncpg.Connection


# -- attributes of the router's provider calls (OpenTelemetry's gen_ai and http conventions) ----------
def provider_attributes(provider: str, model: str) -> dict[str, str] | None:
    """A provider call's span attributes (None, computing nothing, when not tracing)."""
    if not _tracing:
        return None
    return {"gen_ai.provider.name": provider, "gen_ai.request.model": model}


def http_attributes(provider: str, url: Any) -> dict[str, Any] | None:
    """An HTTP request's span attributes: method, host, port and path (never the query, which some
    providers' APIs accept a key in, nor headers or body)."""
    if not _tracing:
        return None
    return {
        "gen_ai.provider.name": provider,
        "http.request.method": "POST",
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "url.path": url.path,
    }


def annotate_http(target: trace.Span | None, status_code: int) -> None:
    if target is not None:
        target.set_attribute("http.response.status_code", status_code)
        if status_code >= 400:
            target.set_status(Status(StatusCode.ERROR, f"HTTP {status_code}"))


def annotate_usage(target: trace.Span | None, usage: Any) -> None:
    """Token counts on ``target`` (a provider call's span), when the answer carried them."""
    if target is not None and usage is not None:
        target.set_attributes(
            {"gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens}
        )


def annotate_route(outcome: str, provider: str, model: str, usage: Any) -> None:
    """How the router answered, on the call's server span: outcome, provider, model and tokens."""
    if not _tracing:
        return
    current = trace.get_current_span()
    current.set_attributes(
        {"goblin.outcome": outcome, "gen_ai.provider.name": provider, "gen_ai.response.model": model}
    )
    annotate_usage(current, usage)
