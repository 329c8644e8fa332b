"""OpenTelemetry set up once per process.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set: spans are
exported over OTLP, sampled as ``OTEL_TRACES_SAMPLER`` says (by default every trace), gRPC servers and
clients are instrumented here and the gateway turns on FastAPI's own telemetry. Without an exporter
nobody could read a span, so nothing is instrumented and spans are sampled out: the request path pays
nothing for tracing, and the correlation id, which crosses every hop and is in every log line, ties a
request's logs together.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_provider: TracerProvider | None = None


def setup_telemetry(service: str) -> TracerProvider:
    """Install the tracer provider, and the gRPC instrumentation when exporting. Safe to call twice."""
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({SERVICE_NAME: f"goblin-{service}"})
    if not exporting():
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    _provider = provider
    return provider


def exporting() -> bool:
    """Whether spans go anywhere: an OTLP endpoint is configured."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def shutdown_telemetry() -> None:
    """Flush spans still buffered; called on graceful shutdown."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
