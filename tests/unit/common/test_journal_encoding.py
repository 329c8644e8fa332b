"""The journal's line (orjson, with json.dumps for what orjson writes differently or refuses) reads back
exactly as the json.dumps line did, through the journal's own reader."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from services.common.journal import Journal, encode_row
from services.router.ledger import RoutingRecord


def json_line(row: Any) -> bytes:
    """The line as the journal wrote it before."""
    return (json.dumps(list(row), separators=(",", ":")) + "\n").encode()


ROWS = [
    RoutingRecord(
        requested_model="openai/gpt-4o-mini",
        outcome="ok",
        provider="openai",
        tenant_id="acme",
        prompt_tokens=21,
        cost_usd=1.23e-05,
        latency_ms=3.217,
        fallback_chain=["a/b", "c/d"],
    ).row(),
    RoutingRecord(requested_model="local", outcome="error", error_code="provider_timeout").row(),
    ("id", "héllo wörld ✓ 😀", None, True, False, 0, -1, 2**63 - 1, 1e300, 5e-324, 0.1, [], {"k": [1, "v"]}),
    ("big", 2**64, -(2**70)),  # beyond 64 bits: orjson refuses, json.dumps writes them
    ("lone surrogate", "\ud800x"),
    ("not finite", float("nan"), float("inf"), -float("inf"), [1.0, float("nan")], {"x": float("inf")}),
    ("int keys", {1: "a"}),
    ["a list row", "x"],
]


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_a_row_reads_back_as_the_json_dumps_line_did(row: Any, tmp_path: Path) -> None:
    line = encode_row(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    expected, got = json.loads(json_line(row)), json.loads(line)
    assert repr(got) == repr(expected)  # repr: NaN != NaN, but reads back as NaN both ways


def test_the_journal_reader_reads_the_new_lines(tmp_path: Path) -> None:
    writer = Journal(tmp_path, "router-routing_requests")
    for seq, row in enumerate(ROWS, 1):
        assert writer.append(seq, row)
    writer.close(keep=True)
    [(_, rows)] = list(Journal(tmp_path, "router-routing_requests").orphans())
    assert repr(rows) == repr([json.loads(json_line(row)) for row in ROWS])


def test_what_json_dumps_refused_is_still_refused() -> None:
    for row in (("when", datetime.datetime(2026, 12, 1)), ("what", object())):
        with pytest.raises(TypeError):
            json_line(row)
        with pytest.raises(TypeError):
            encode_row(row)


def test_a_routing_row_takes_the_orjson_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("json.dumps used for a plain row")

    monkeypatch.setattr("services.common.journal.json.dumps", refuse)
    for row in ROWS[:3]:
        assert json.loads(encode_row(row)) is not None
