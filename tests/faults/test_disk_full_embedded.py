"""Disk full for GOBLIN_HOME (issue 19, case 7) with the embedded PostgreSQL and Redis on it too, as
`goblin up` runs on a laptop (GOBLIN_HOME/pg, GOBLIN_HOME/redis): the same fill under the same load
(goblin_tools/faults.py ``run_disk_full``). PostgreSQL then cannot extend its files ("could not extend
file": SQLSTATE 53100) and the ledger's writer must wait for space rather than drop answered rows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from goblin_tools.faults import NoSmallFilesystem, SmallHome, run_disk_full, service_pids, small_home_suite

pytestmark = pytest.mark.faults

# PostgreSQL's cluster (about 40 MiB, with its first WAL segments) and Redis's, besides the rest.
EMBEDDED_FS_BYTES = 256 << 20


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallHome]:
    try:
        with small_home_suite(
            tmp_path_factory.mktemp("diskfull-embedded"), EMBEDDED_FS_BYTES, embedded_stores=True
        ) as small:
            print(f"\nsmall GOBLIN_HOME ({EMBEDDED_FS_BYTES >> 20} MiB tmpfs, embedded stores on it) by {small.method}")
            yield small
    except NoSmallFilesystem as exc:
        pytest.skip(str(exc))


def test_with_the_embedded_stores_on_it_nothing_answered_is_lost(small_home: SmallHome) -> None:
    suite = small_home.suite
    pids = service_pids(suite, small_home.inner_pid)
    result = run_disk_full(small_home)
    failures = result.failures()
    detail = "\n".join(f"  {o.kind} at {o.sent_at:.2f}s: {o.status} {o.error} hung={o.hung}" for o in failures[:20])
    print(f"\n({small_home.method}, embedded stores) {result.row()}\n{detail}")
    assert not failures, f"{len(failures)} requests failed or hung:\n{detail}\n{suite.log_tail(60)}"
    assert result.lost == 0, f"{result.lost} answered chats missing from the ledger"
    assert service_pids(suite, small_home.inner_pid) == pids, "a service restarted"
    assert not [line for line in suite.log_lines() if "refused a row; dropped it" in line]
    with suite.admin_client() as client:
        reply = client.post(
            "/v1/chat/completions", json={"model": "house", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert reply.status_code == 200, reply.text
