from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.common.context import correlation_id_var, hash_user_id
from services.common.logs import JsonFormatter


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("router"))
    logger = logging.getLogger("test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_every_line_is_json_with_ids(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    token = correlation_id_var.set("corr-123")
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            logger.info("request_completed", extra={"status_code": 200, "duration_ms": 1.5})
            context = span.get_span_context()
    finally:
        correlation_id_var.reset(token)
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "request_completed"
    assert entry["service"] == "router"
    assert entry["level"] == "INFO"
    assert entry["correlation_id"] == "corr-123"
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert entry["status_code"] == 200
    assert entry["duration_ms"] == 1.5
    assert entry["timestamp"].endswith("+00:00")


def test_outside_a_span_ids_are_empty_not_missing(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning("plain")
    entry = json.loads(stream.getvalue())
    assert entry["trace_id"] == "" and entry["span_id"] == "" and entry["correlation_id"] == ""


def test_exceptions_are_one_json_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exception"]


def test_user_ids_are_hashed_for_telemetry() -> None:
    digest = hash_user_id("alice@example.com")
    assert digest and "alice" not in digest
    assert digest == hash_user_id("alice@example.com")
    assert digest != hash_user_id("bob@example.com")
    assert hash_user_id("") == ""
