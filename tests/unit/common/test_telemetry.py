"""Tracing set-up: without an exporter nothing is recorded, yet trace ids still exist for logs and
propagation; with one, spans are recorded. Each case runs in a fresh interpreter, because the tracer
provider is process-global and can be set only once."""

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
from services.common.telemetry import setup_telemetry
setup_telemetry("probe")
with trace.get_tracer("probe").start_as_current_span("work") as span:
    context = span.get_span_context()
    print(json.dumps({"recording": span.is_recording(), "valid": context.is_valid, "sampled": context.trace_flags.sampled}), flush=True)
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


def test_without_an_exporter_spans_are_not_recorded_but_carry_trace_ids() -> None:
    assert probe() == {"recording": False, "valid": True, "sampled": False}


def test_with_an_exporter_spans_are_recorded() -> None:
    # Nothing listens there; the exporter only tries when the batch is flushed, after the probe printed.
    seen = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    assert seen == {"recording": True, "valid": True, "sampled": True}
