"""A task's descriptors in the executor's process, end to end: a real task through the zygote with
stdin, stdout and stderr, on each event loop, and not one descriptor closed twice (see test_pipe_fds.py
for why a second close matters, and for the pipes' own cases)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from services.executor import prefork
from services.executor.sandbox import run as run_task
from tests.unit.executor.fds import Closes, closes, run  # noqa: F401 (fixtures)
from tests.unit.executor.processes import python, spec


def test_a_task_closes_each_of_its_descriptors_once(run: Callable, closes: Closes, work_root: Path) -> None:  # noqa: F811
    echo = python("import sys; data = sys.stdin.read(); print(data); print('err', file=sys.stderr)")

    async def main() -> list:
        try:
            results = []
            for _ in range(3):
                results.append(await run_task(spec(work_root, *echo, stdin=b"to the task", timeout_s=30)))
            # Abandoned before it ended: output never read to its end, the task killed.
            sleeper = python("import time; print('up', flush=True); time.sleep(60)")
            running = asyncio.create_task(run_task(spec(work_root, *sleeper, timeout_s=60)))
            await asyncio.sleep(1.0)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            return results
        finally:
            prefork.stop()

    results = run(main)
    assert [(r.status, r.stdout_tail.strip(), r.stderr_tail.strip()) for r in results] == [
        ("succeeded", "to the task", "err")
    ] * 3
    assert closes.already_closed == [], f"descriptors closed twice: {closes.already_closed}"


def test_a_zygote_replaced_from_another_loop_is_unwatched_before_its_socket_closes() -> None:
    # A loop still watching a closed number misses the next descriptor given that number: asyncio's
    # selector keeps the stale entry, and registering the new one only replaces the entry's callback
    # (a zygote started later on that loop never had its answer read: "did not answer within 30 s").
    first = asyncio.new_event_loop()
    try:

        async def start() -> int:
            return prefork.current().sock.fileno()

        async def replace() -> None:
            prefork.current()
            prefork.stop()

        number = first.run_until_complete(start())
        assert first._selector.get_map().get(number) is not None  # type: ignore[attr-defined]
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(replace())
        assert first._selector.get_map().get(number) is None  # type: ignore[attr-defined]
    finally:
        first.close()
