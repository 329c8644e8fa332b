"""OpenTelemetry set up once per process.

Spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (sampled as
``OTEL_TRACES_SAMPLER`` says, by default every trace). Without an exporter nothing is recorded: spans
are sampled out, so they still carry trace ids (logs show them, and context propagates across hops) but
cost no attributes, events or span processing on the request path.
gRPC servers and clients are instrumented here; the gateway instruments its FastAPI app itself.
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
    """Install the tracer provider and the gRPC instrumentation. Safe to call twice."""
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({SERVICE_NAME: f"goblin-{service}"})
    if exporting():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    _provider = provider
    return provider


def exporting() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def shutdown_telemetry() -> None:
    """Flush spans still buffered; called on graceful shutdown."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
