"""Disk full for GOBLIN_HOME (issue 19, case 7): the suite runs with its GOBLIN_HOME on a small
filesystem of its own, which is filled while the mixed load of goblin_tools/faults.py runs, then freed.

What lives on the small filesystem: all of GOBLIN_HOME (TLS certificates and keys, the admin key and
the key-encryption key, the write-ahead journals, the instance locks, RAG's Chroma and keyword index,
the executor's work directories). What does not: PostgreSQL and Redis (their own data directories,
as a deployment's servers are; a database whose disk fills is that database's failure, not the
suite's) and the suite's log (so the test can read it whatever happens).

How the small filesystem is made, without Docker and without touching the machine's mounts: a tmpfs
of a fixed size mounted in a mount namespace of the suite's own, by bubblewrap (works as root and, on
kernels that allow unprivileged user namespaces, as a user) or, as root without bubblewrap, by
``unshare -m``. The test reaches the filesystem from outside through ``/proc/<pid>/root``. When
neither works the module is skipped with the reason.

What must hold: every request answered OK or refused clearly, none hung; no answered chat missing from
the routing ledger; no service restarted; the operator told (a log line and
``goblin_journal_rows_unjournaled_total``); once space returns, journaling resumes without restarts,
and the keys, certificates and journals are intact (a service killed then comes back and replays).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from goblin_tools.faults import (
    RECOVERY_S,
    SMALL_FS_BYTES,
    CaseResult,
    NoSmallFilesystem,
    Outcome,
    SmallHome,
    ledger_missing,
    run_disk_full,
    service_pids,
    small_home_suite,
)
from goblin_tools.suite import Suite

pytestmark = pytest.mark.faults

FULL_HOLD_S = 5.0


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallHome]:
    try:
        with small_home_suite(tmp_path_factory.mktemp("diskfull")) as small:
            print(f"\nsmall GOBLIN_HOME ({SMALL_FS_BYTES >> 20} MiB tmpfs) by {small.method}")
            yield small
    except NoSmallFilesystem as exc:
        pytest.skip(str(exc))


def metric_total(suite: Suite, service: str, name: str) -> float:
    text = httpx.get(suite.metrics_url(service), timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def restart(small: SmallHome, service: str, timeout_s: float = 120) -> None:
    """SIGKILL ``service`` and return once the supervisor has started it again (ready or not)."""
    old = service_pids(small.suite, small.inner_pid)[service]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while service_pids(small.suite, small.inner_pid).get(service, old) == old:
        assert time.monotonic() < deadline, f"{service} was not started again:\n{small.suite.log_tail(40)}"
        time.sleep(0.1)


def readiness(suite: Suite, timeout_s: float = 60) -> dict[str, str]:
    """Each backend's state as the gateway's /health/ready reports it (waiting for the gateway)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with suite.client(timeout=5) as client:
                return client.get("/health/ready").json()["services"]
        except (httpx.HTTPError, ValueError, KeyError):
            assert time.monotonic() < deadline, f"the gateway does not answer:\n{suite.log_tail(40)}"
            time.sleep(0.2)


def settle(suite: Suite, settle_s: float) -> dict[str, str]:
    """Readiness once every backend is serving, or after ``settle_s`` (some may wait for space)."""
    deadline = time.monotonic() + settle_s
    states = readiness(suite)
    while any(state != "SERVING" for state in states.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        states = readiness(suite)
    return states


def test_a_full_goblin_home_under_load_answers_cleanly_and_loses_nothing(small_home: SmallHome) -> None:
    suite = small_home.suite
    pids = service_pids(suite, small_home.inner_pid)
    before = metric_total(suite, "router", "goblin_journal_rows_unjournaled_total")
    result = run_disk_full(small_home, FULL_HOLD_S)
    failures = result.failures()
    detail = "\n".join(f"  {o.kind} at {o.sent_at:.2f}s: {o.status} {o.error} hung={o.hung}" for o in failures[:20])
    print(f"\n({small_home.method}) {result.row()}\n{detail}")
    assert not failures, f"{len(failures)} requests failed or hung:\n{detail}\n{suite.log_tail(60)}"
    assert result.lost == 0, f"{result.lost} answered chats missing from the ledger"
    assert result.recovery_s() <= RECOVERY_S
    assert service_pids(suite, small_home.inner_pid) == pids, "a service restarted"
    # The operator is told: a counter and one log line per journal, not one per row.
    assert metric_total(suite, "router", "goblin_journal_rows_unjournaled_total") > before
    lines = [line for line in suite.log_lines() if "rows are not journaled (no space left" in line]
    assert lines and len(lines) <= 8, lines[:10]
    assert any("journaling again" in line for line in suite.log_lines())


def test_services_restarted_while_it_is_full_wait_for_space_and_need_no_other_restart(small_home: SmallHome) -> None:
    """Every service SIGKILLed while GOBLIN_HOME is full is started again and either serves or waits,
    not ready, saying why (no crash loop); the chat path serves; once space returns every one is ready
    by itself."""
    suite = small_home.suite
    small_home.fill()
    try:
        for service in ("router", "auth", "inference", "rag", "executor", "gateway"):
            restart(small_home, service)
        pids = service_pids(suite, small_home.inner_pid)
        states = settle(suite, 45)
        waiting = sorted(name for name, state in states.items() if state != "SERVING")
        print(f"\n({small_home.method}) while full, after a restart: {states}")
        for name in waiting:
            said = [line for line in suite.log_lines() if said_disk_full(line, name)]
            assert said, f"{name} is not ready and did not say the disk is full:\n{suite.log_tail(40)}"
        assert {"router", "auth"}.isdisjoint(waiting), states  # they keep nothing on disk at start
        with suite.admin_client() as client:
            chat = {"model": "house", "messages": [{"role": "user", "content": "hi"}]}
            reply = client.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
    finally:
        small_home.free()
    suite.wait_ready(timeout_s=120)
    assert service_pids(suite, small_home.inner_pid) == pids, "a service needed another restart"


def test_state_is_intact_after_space_returns(small_home: SmallHome) -> None:
    suite = small_home.suite
    assert small_home.free_bytes() > 1 << 20
    assert suite.admin_key == small_home.admin_key
    assert (suite.home / "auth-kek.key").read_bytes() == small_home.kek
    suite.ssl_context()  # the CA still loads
    for segment in (suite.home / "journal").glob("*.jsonl"):
        lines = segment.read_bytes().split(b"\n")
        for line in lines[:-1]:  # every complete line is a row (only a crash may tear the last one)
            json.loads(line)
    # Chats answered now are journaled again, and a router killed right after answering replays them.
    correlations = []
    with suite.admin_client() as client:
        for i in range(20):
            correlation = f"after-full-{i}-{time.time_ns()}"
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "house", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Correlation-ID": correlation},
            )
            assert reply.status_code == 200, reply.text
            correlations.append(correlation)
    restart(small_home, "router")
    answered = CaseResult("after", [Outcome("chat_fake", 0, 200, correlation_id=c) for c in correlations], frozenset())
    assert ledger_missing(suite, answered) == 0


def said_disk_full(line: str, service: str) -> bool:
    """Whether a JSON log line of ``service`` says the disk is full (parsed, so no serializer's spacing matters)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict) or record.get("service") != service:
        return False
    return "full" in str(record.get("message", "")).lower()
