"""JSON logs, one object per line, each with trace_id, span_id and correlation_id.

trace_id is the active span's; outside a span, the id the gateway answered the request with
(X-Trace-Id, :data:`services.common.telemetry.request_trace_id_var`), else "".

Set up once per process by :func:`configure_logging`; modules log through ``logging.getLogger``.
Extra fields go in ``extra={...}`` and land as top-level keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import orjson
from opentelemetry import trace

from services.common.context import current_correlation_id
from services.common.telemetry import request_trace_id_var

# Attributes every LogRecord has; anything else was passed through ``extra`` and is emitted.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        span_context = trace.get_current_span().get_span_context()
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
            "correlation_id": current_correlation_id(),
            "trace_id": format(span_context.trace_id, "032x") if span_context.is_valid else request_trace_id_var.get(),
            "span_id": format(span_context.span_id, "016x") if span_context.is_valid else "",
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            # orjson: the line every request writes costs a fraction of json.dumps. Datetimes and
            # dataclasses go to ``str`` as they did with json; so does anything else it cannot encode.
            return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
        except TypeError:  # an integer beyond 64 bits, a non-string key orjson refuses
            return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, grpc's, uvicorn's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The gateway writes its own request_completed line; uvicorn's access line would be a second copy.
    logging.getLogger("uvicorn.access").disabled = True
    # Chroma's telemetry client logs noisy failures when it cannot phone home; we never let it.
    logging.getLogger("chromadb.telemetry").setLevel(logging.CRITICAL)
