"""Fixtures for the descriptor tests (test_pipe_fds.py, test_task_fds.py): a loop of each kind the
executor may run on, and a record of every close of a descriptor in this process."""

from __future__ import annotations

import asyncio
import gc
import io
import os
from collections.abc import Callable, Iterator

import pytest
import uvloop

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable]:
    """Runs a coroutine function on a fresh loop of each kind (the executor's is uvloop)."""

    def running(main: Callable) -> object:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(main())

    yield running
    gc.collect()  # what a collected transport would close, it closes now, inside the test


class Closes:
    """Every close of a descriptor in this process through ``os.close`` or a file object, and the ones
    that found the number already closed (the second close of a double close)."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.already_closed: list[int] = []

    def saw(self, fd: int) -> None:
        self.numbers.append(fd)
        try:
            os.fstat(fd)
        except OSError:
            self.already_closed.append(fd)


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> Closes:
    seen = Closes()
    real_close = os.close

    def close(fd: int) -> None:
        seen.saw(fd)
        real_close(fd)

    class File(io.FileIO):
        def close(self) -> None:
            if not self.closed and self.closefd:
                seen.saw(self.fileno())
            super().close()

    def fdopen(fd: int, mode: str = "r", buffering: int = -1, *args: object, **kwargs: object) -> io.FileIO:
        return File(fd, mode.replace("b", ""), closefd=bool(kwargs.get("closefd", True)))

    monkeypatch.setattr(os, "close", close)
    monkeypatch.setattr(os, "fdopen", fdopen)
    return seen
