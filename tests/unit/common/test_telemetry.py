"""Tracing set-up: without an exporter nothing is instrumented or recorded; with one, spans are recorded
and gRPC is instrumented. Each case runs in a fresh interpreter, because the tracer provider is
process-global and can be set only once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
from services.common.telemetry import setup_telemetry
setup_telemetry("probe")
with trace.get_tracer("probe").start_as_current_span("work") as span:
    seen = {"recording": span.is_recording(), "grpc": GrpcAioInstrumentorServer().is_instrumented_by_opentelemetry}
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
    assert probe() == {"recording": False, "grpc": False}


def test_with_an_exporter_spans_are_recorded() -> None:
    # Nothing listens there; the exporter only tries when the batch is flushed, after the probe printed.
    seen = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    assert seen == {"recording": True, "grpc": True}
