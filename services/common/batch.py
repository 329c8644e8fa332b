"""Rows written to Postgres in batches by one background task, so a request never waits on an insert,
and, with a :class:`~services.common.journal.Journal`, never lost once the request is answered.

``add(row)`` journals the row (one append to a local file, before the caller answers), queues it, and
returns. The background task writes queued rows in batches and tells the journal what is committed.
While Postgres is unreachable the task retries the same batch with a growing pause (up to
``RETRY_MAX_S``): nothing is dropped, rows wait in the bounded queue and the journal. A row the queue
has no room for stays in the journal and is written from it once the writer has caught up (counted as
deferred). A row Postgres refuses (a constraint) is dropped alone, counted, and logged; the rest of its
batch is written. A row that could neither be queued nor journaled is dropped and counted, never
silently, and so is a row the journal refused (a full disk) that Postgres could not take before the
process stopped (a SIGKILL meanwhile loses such rows uncounted: the journal counted them as
unjournaled when it refused them). At start, rows that an earlier process journaled and did not
commit (it was killed, or stopped while Postgres was away) are written first.

With a journal, ``insert_sql`` must be idempotent on a row id (``ON CONFLICT (id) DO NOTHING``): a
row that reached Postgres just before a kill is journaled still and is written again at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from prometheus_client import Counter, Gauge

from services.common.background import BackgroundLoop
from services.common.errors import Unavailable
from services.common.journal import Journal
from services.common.stores import STORE_UNREACHABLE, PostgresStore

log = logging.getLogger(__name__)

DROPPED = Counter("goblin_batch_rows_dropped_total", "Rows that could not be written to Postgres.", ["table"])
DEFERRED = Counter(
    "goblin_batch_rows_deferred_total", "Rows the queue had no room for, written later from the journal.", ["table"]
)
REPLAYED = Counter(
    "goblin_batch_rows_replayed_total", "Journaled rows written again at start or after a deferral.", ["table"]
)
RETRIES = Counter(
    "goblin_batch_write_retries_total", "Batch writes retried because Postgres was unreachable.", ["table"]
)
QUEUED = Gauge("goblin_batch_rows_queued", "Rows waiting to be written to Postgres.", ["table"])

FLUSH_INTERVAL_S = 0.2
BATCH_SIZE = 200
QUEUE_LIMIT = 10_000
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

# Postgres is away, or there but unable to take any row now: retry. Unavailable: the store's pool is not
# open yet (Postgres was away when the service started). InsufficientResourcesError (SQLSTATE class
# 53): its disk is full ("could not extend file"), it is out of memory or of connections; Admin- and
# CrashShutdownError: it is going down. Nothing is wrong with the rows then, and dropping them lost
# answered requests from the ledger when the embedded PostgreSQL's disk (GOBLIN_HOME/pg) filled.
# Anything else from asyncpg is about the rows.
UNREACHABLE = (
    *STORE_UNREACHABLE,
    Unavailable,
    asyncpg.InsufficientResourcesError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

Row = Sequence[object]


class BatchWriter:
    """``add(row)`` queues a tuple for ``insert_sql`` (an INSERT with $1.. placeholders); with ``journal``
    it is first appended to that local journal."""

    def __init__(self, store: PostgresStore, table: str, insert_sql: str, *, journal: Journal | None = None) -> None:
        self.store = store
        self.table = table
        self.insert_sql = insert_sql
        self.journal = journal
        self._queue: asyncio.Queue[tuple[int, Row]] = asyncio.Queue(QUEUE_LIMIT)
        self._held: list[tuple[int, Row]] = []  # taken off the queue, not yet committed in Postgres
        self._seq = 0
        self._unjournaled: set[int] = set()  # queued rows the journal refused (disk full): memory only
        self._replay_due = journal is not None
        self._stopping = False
        self._queued = QUEUED.labels(table)
        # No pause between turns: each turn waits for a row itself. Stopping writes what is still queued.
        self._loop = BackgroundLoop(f"{table}-writer", self._write_next_batch, final=self.flush)

    def add(self, row: Row) -> None:
        """Journal (when there is a journal) and queue ``row``; returns at once."""
        self._seq += 1
        journaled = self.journal is not None and self.journal.append(self._seq, row)
        try:
            self._queue.put_nowait((self._seq, row))
            self._queued.inc()
            if self.journal is not None and not journaled:
                self._unjournaled.add(self._seq)
        except asyncio.QueueFull:
            if journaled:
                assert self.journal is not None
                self.journal.pin()
                DEFERRED.labels(self.table).inc()
            else:
                DROPPED.labels(self.table).inc()
                log.error("%s writer full; dropped a row", self.table)

    async def start(self) -> None:
        """Start the background writer (which first writes what earlier processes journaled)."""
        self._stopping = False
        await self._loop.start()

    async def healthy(self) -> bool:
        """Whether the background writer is running."""
        return await self._loop.healthy()

    async def stop(self) -> None:
        """Stop the writer and write every row still queued; rows Postgres cannot take now stay in the
        journal for the next start."""
        self._stopping = True
        await self._loop.stop()

    async def flush(self) -> None:
        """Write everything queued now, in batches."""
        if self._held and not await self._write(self._held):
            return self._give_up()
        self._held = []
        while not self._queue.empty():
            self._held = self._take(BATCH_SIZE)
            if not await self._write(self._held):
                return self._give_up()
            self._held = []
        if self._stopping:
            self._close_journal(keep=False)

    def _give_up(self) -> None:
        """Stopping with rows Postgres cannot take: the journaled ones stay for the next start; the ones
        the journal refused (a full disk) go with this process: counted and logged."""
        if lost := len(self._unjournaled):
            DROPPED.labels(self.table).inc(lost)
            log.error("%s: %d rows neither journaled nor written (disk full, Postgres away at stop)", self.table, lost)
            self._unjournaled.clear()
        self._close_journal(keep=True)

    def _close_journal(self, *, keep: bool) -> None:
        if self.journal is not None:
            self.journal.close(keep=keep)

    def _take(self, limit: int) -> list[tuple[int, Row]]:
        taken = []
        while not self._queue.empty() and len(taken) < limit:
            taken.append(self._queue.get_nowait())
        self._queued.dec(len(taken))
        return taken

    async def _write(self, batch: list[tuple[int, Row]]) -> bool:
        """Write ``batch`` (retrying while Postgres is unreachable, unless stopping) and mark it
        committed; False when stopping left it unwritten."""
        if not await self._insert([row for _, row in batch]):
            return False
        if self._unjournaled:
            self._unjournaled = {seq for seq in self._unjournaled if seq > batch[-1][0]}
        if self.journal is not None:
            self.journal.committed(batch[-1][0])
            if self._queue.empty():
                # Caught up: every queued row is in Postgres, so what the journal still holds are rows
                # the queue had no room for. Write them now rather than at the next start.
                if self.journal.pinned:
                    self.journal.release()
                if self.journal.released:
                    self._replay_due = True
        return True

    async def _insert(self, rows: list[Row]) -> bool:
        pause = RETRY_FIRST_S
        while True:
            try:
                await self.store.pool.executemany(self.insert_sql, rows)
                return True
            except UNREACHABLE as exc:
                if self._stopping:
                    log.warning(
                        "%s: Postgres cannot take rows while stopping (%s); rows stay journaled", self.table, exc
                    )
                    return False
                RETRIES.labels(self.table).inc()
                log.warning("%s: Postgres cannot take rows (%s); retrying in %.1fs", self.table, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
            except asyncpg.PostgresError:
                return await self._insert_one_by_one(rows)

    async def _insert_one_by_one(self, rows: list[Row]) -> bool:
        """A batch Postgres refused: write its rows alone, so only the refused ones are dropped."""
        for row in rows:
            try:
                await self.store.pool.execute(self.insert_sql, *row)
            except UNREACHABLE:  # before PostgresError: some of these are Postgres errors
                return await self._insert(rows)  # went away mid-way: the whole batch again (idempotent)
            except asyncpg.PostgresError:
                DROPPED.labels(self.table).inc()
                log.exception("%s refused a row; dropped it", self.table)
        return True

    async def _replay(self) -> None:
        """Write the rows journaled by processes that did not commit them (and this one's deferred)."""
        self._replay_due = False
        assert self.journal is not None
        for path, rows in self.journal.orphans():
            for start in range(0, len(rows), BATCH_SIZE):
                if not await self._insert([tuple(r) for r in rows[start : start + BATCH_SIZE]]):
                    return
            REPLAYED.labels(self.table).inc(len(rows))
            self.journal.discard(path)
            log.info("%s: wrote %d journaled rows from %s", self.table, len(rows), path.name)

    async def _write_next_batch(self) -> None:
        if self._replay_due:
            await self._replay()
        # Wait for a row, then a little longer so that the rows of a burst share one INSERT. Rows wait
        # in ``_held``, not in a local, until committed: a stop() meanwhile flushes them with the rest.
        self._held.append(await self._queue.get())
        self._queued.dec()
        await asyncio.sleep(FLUSH_INTERVAL_S)
        self._held.extend(self._take(BATCH_SIZE - len(self._held)))
        if await self._write(self._held):
            self._held = []
