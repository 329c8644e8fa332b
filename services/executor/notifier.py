"""LISTEN on the executor's channel: one connection per process, fanned out to whoever waits.

Payloads are ``queued:<id>`` (wake the workers), ``cancel:<id>`` (the owner of a running task kills
it) and ``event:<id>`` (streams of that task read again). A NOTIFY can be missed while the connection
is being re-opened, so every waiter also wakes on its own polling interval: the notifications make
things fast, never correct.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from services.common import db
from services.executor.repository import CHANNEL

log = logging.getLogger(__name__)


class Notifier:
    """The listening connection (kept open, re-opened when it drops) and the waiters it wakes."""

    def __init__(self, dsn: str, *, retry_s: float = 1.0) -> None:
        self.dsn = dsn
        self.retry_s = retry_s
        self.work = asyncio.Event()
        self.on_cancel: Callable[[str], None] = lambda task_id: None
        self._streams: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="executor-listener")

    async def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                conn = await db.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                self._conn = conn
                # Whatever was queued or written while we were not listening: look once.
                self.work.set()
                for waiters in self._streams.values():
                    for waiter in waiters:
                        waiter.set()
                try:
                    await lost.wait()
                finally:
                    self._conn = None
                    with contextlib.suppress(Exception):
                        await conn.close()
                log.warning("executor listener connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("executor listener cannot connect: %s; retrying in %.1fs", exc, self.retry_s)
            await asyncio.sleep(self.retry_s)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, task_id = payload.partition(":")
        if kind == "queued":
            self.work.set()
        elif kind == "cancel":
            self.on_cancel(task_id)
        elif kind == "event":
            for waiter in self._streams.get(task_id, ()):
                waiter.set()

    @contextlib.contextmanager
    def watching(self, task_id: str):  # noqa: ANN201 - a context manager of an asyncio.Event
        """An event set whenever ``task_id`` gets new events, for as long as the block runs."""
        waiter = asyncio.Event()
        self._streams[task_id].add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._streams.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._streams[task_id]
