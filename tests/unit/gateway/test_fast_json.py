"""orjson on the hot path: chat answers, SSE events and the JSON log lines say what the standard
library said, and what orjson refuses still encodes."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime

from services.common.logs import JsonFormatter
from services.gateway.api.fast_json import FastJSONResponse, dumps


def test_answers_are_the_same_json() -> None:
    answer = {"id": "chatcmpl-1", "choices": [{"message": {"content": 'héllo "q" \n'}}], "n": 2, "p": 0.1}
    assert json.loads(dumps(answer)) == answer
    assert dumps(answer) == json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(FastJSONResponse(answer).body) == answer
    assert json.loads(dumps({"big": 2**70})) == {"big": 2**70}  # beyond orjson: the standard library
    assert json.loads(dumps({"logprob": float("-inf")})) == {"logprob": None}  # valid JSON, not -Infinity


@dataclasses.dataclass
class Thing:
    name: str


def test_log_lines_keep_their_fields() -> None:
    record = logging.LogRecord("goblin.access", logging.INFO, __file__, 1, "request_completed", None, None)
    when = datetime(2026, 12, 1, tzinfo=UTC)
    extra = {"status_code": 200, "duration_ms": 1.5, "when": when, "thing": Thing("x"), "raw": b"\x00", "k": {1: "a"}}
    for key, value in {**extra, "huge": 2**70}.items():
        setattr(record, key, value)
    line = json.loads(JsonFormatter("gateway").format(record))
    assert line["message"] == "request_completed" and line["service"] == "gateway" and line["level"] == "INFO"
    assert (line["status_code"], line["duration_ms"], line["huge"]) == (200, 1.5, 2**70)
    assert (line["when"], line["thing"], line["raw"]) == (str(when), str(Thing("x")), str(b"\x00"))
    assert line["k"] == {"1": "a"}
    del record.huge
    fast = json.loads(JsonFormatter("gateway").format(record))  # the orjson path, same fields
    assert {k: fast[k] for k in extra} == {k: line[k] for k in extra}
