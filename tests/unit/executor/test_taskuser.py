"""A uid of its own per running task (GOBLIN_EXECUTOR_RUN_AS_RANGE): distinct uids, a process budget
each, and a clear refusal when the range is used up."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from services.executor import sandbox
from services.executor.sandbox import run
from services.executor.taskuser import RUN_AS_RANGE_ENV, run_as_range
from tests.unit.executor.processes import spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run tasks as other users")

# Six background processes and the shell (plus bubblewrap's own two under bwrap) under a limit of 12
# each: three such tasks sharing one uid would need 21 to 27 under one budget of 12, and their forks
# would fail; each on its own uid fits with room to spare (a limit of 8 left bwrap none, and failed
# now and then when the machine was busy).
FORKS = "for i in 1 2 3 4 5 6; do sleep 1 & done; id -u; wait"


@pytest.mark.parametrize("mode", ["rlimits", "bwrap"])
async def test_each_running_task_has_a_uid_and_a_process_budget_of_its_own(
    work_root: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if mode not in sandbox.available_modes():
        pytest.skip("bubblewrap is not available here")
    monkeypatch.setenv(RUN_AS_RANGE_ENV, "61000-61003")
    results = await asyncio.gather(
        *(run(spec(work_root, "/bin/bash", "-c", FORKS, mode=mode, max_processes=12)) for _ in range(3))
    )
    assert [r.status for r in results] == ["succeeded"] * 3, [r.stderr_tail for r in results]
    uids = [int(r.stdout_tail) for r in results] if mode == "rlimits" else None
    if uids is not None:  # inside bwrap's user namespace the uid reads as its mapping
        assert len(set(uids)) == 3 and all(61000 <= uid <= 61003 for uid in uids)


async def test_a_used_up_range_is_refused_clearly(work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_AS_RANGE_ENV, "61010-61010")
    first = asyncio.create_task(run(spec(work_root, "/bin/sleep", "1")))
    await asyncio.sleep(0.3)
    with pytest.raises(RuntimeError, match="every uid of GOBLIN_EXECUTOR_RUN_AS_RANGE"):
        await run(spec(work_root, "/bin/true"))
    assert (await first).status == "succeeded"
    # Released with its task: the next one gets it.
    assert (await run(spec(work_root, "/bin/true"))).status == "succeeded"


def test_the_range_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_AS_RANGE_ENV, "70000-70999")
    assert run_as_range() == (70000, 70999)
    for bad in ("0-10", "10-5", "abc", "5"):
        monkeypatch.setenv(RUN_AS_RANGE_ENV, bad)
        with pytest.raises(ValueError, match=RUN_AS_RANGE_ENV):
            run_as_range()
    monkeypatch.delenv(RUN_AS_RANGE_ENV)
    assert run_as_range() is None
