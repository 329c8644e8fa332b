"""Faults under steady mixed load (goblin_tools/faults.py): every request answered OK or refused clearly,
none failed otherwise, none hung, recovery within 5 s of the broken part being back, and no answered
chat missing from the routing ledger. One suite, with its own PostgreSQL and Redis so that a case can
stop them, runs every case in turn; `python -m bench.faults` runs the same cases for the report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from goblin_tools.faults import CASES, RECOVERY_S, Case, Stores, fault_suite, run
from goblin_tools.suite import Suite

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Suite, Stores]]:
    with fault_suite(tmp_path_factory.mktemp("faults")) as (suite, stores, _fake):
        yield suite, stores


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_under_load(running: tuple[Suite, Stores], case: Case) -> None:
    suite, stores = running
    result = run(suite, stores, case)
    failures = result.failures()
    detail = "\n".join(f"  {o.kind} at {o.sent_at:.2f}s: {o.status} {o.error} hung={o.hung}" for o in failures[:20])
    print(f"\n{result.row()}\n{detail}")
    assert not failures, f"{case.name}: {len(failures)} requests failed or hung:\n{detail}\n{suite.log_tail(40)}"
    assert result.lost == 0, f"{case.name}: {result.lost} answered chats missing from the ledger"
    assert result.recovery_s() <= RECOVERY_S, f"{case.name}: recovered {result.recovery_s():.1f}s after healing"
    assert result.counts()["ok"] > 0
