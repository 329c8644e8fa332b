"""Tracing set-up: without an exporter nothing is instrumented or recorded; with one, requests and what
they do are recorded, gRPC and Redis are instrumented, and background work starts no trace. Each case
runs in a fresh interpreter, because the tracer provider is process-global and can be set only once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from services.common import telemetry

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
from opentelemetry.instrumentation.redis import RedisInstrumentor
from services.common import telemetry
telemetry.setup_telemetry("probe")
tracer = trace.get_tracer("probe")
with tracer.start_as_current_span("background", kind=trace.SpanKind.CLIENT) as background:
    pass
with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER) as span:
    with telemetry.span("ours") as ours:
        seen = {
            "recording": span.is_recording(),
            "child": ours is not None and ours.is_recording(),
            "background": background.is_recording(),
            "grpc": GrpcAioInstrumentorServer().is_instrumented_by_opentelemetry,
            "redis": RedisInstrumentor().is_instrumented_by_opentelemetry,
            "traceparent": bool(telemetry.current_traceparent()),
        }
    print(json.dumps(seen), flush=True)
import os
os._exit(0)  # skip the exit-time flush to an exporter nobody listens to
"""


def probe(**env: str) -> dict[str, bool]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_an_exporter_nothing_is_instrumented_or_recorded() -> None:
    off = {"recording": False, "child": False, "background": False, "grpc": False, "redis": False}
    assert probe() == {**off, "traceparent": False}


def test_with_an_exporter_requests_and_what_they_do_are_recorded_and_background_work_is_not() -> None:
    # Nothing listens there; the exporter only tries when the batch is flushed, after the probe printed.
    seen = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    assert seen == {
        "recording": True,
        "child": True,
        "background": False,  # a client span with no request above it starts no trace
        "grpc": True,
        "redis": True,
        "traceparent": True,
    }


def test_untraced_spans_are_one_shared_no_op() -> None:
    assert not telemetry.tracing()
    with telemetry.span("anything", {"a": 1}) as current:
        assert current is None
    assert telemetry.span("x") is telemetry.span("y")
    assert telemetry.pg_connection_class() is asyncpg.Connection
    assert (
        telemetry.current_traceparent() == ""
        and telemetry.context_from("00-" + "1" * 32 + "-" + "2" * 16 + "-01") is None
    )


def test_the_answered_trace_id_is_the_callers_when_valid_else_a_fresh_one() -> None:
    theirs = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert telemetry.request_trace_id(f"00-{theirs}-00f067aa0ba902b7-01".encode()) == theirs
    for bad in (b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"00-XYZ" + b"1" * 29 + b"-00f067aa0ba902b7-01", b"junk"):
        fresh = telemetry.request_trace_id(bad)
        assert len(fresh) == 32 and set(fresh) <= set("0123456789abcdef") and fresh != theirs
    assert telemetry.request_trace_id(None) != telemetry.request_trace_id(None)
