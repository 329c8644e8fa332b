"""Rows written to Postgres in batches by one background task, so a request never waits on an insert.

The queue is bounded: if Postgres falls far behind, rows are dropped and counted instead of letting
memory grow; ``stop()`` flushes everything still queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import Counter

from services.common.background import BackgroundLoop
from services.common.stores import PostgresStore

log = logging.getLogger(__name__)

DROPPED = Counter("goblin_batch_rows_dropped_total", "Rows that could not be written to Postgres.", ["table"])

FLUSH_INTERVAL_S = 0.2
BATCH_SIZE = 200
QUEUE_LIMIT = 10_000


class BatchWriter:
    """``add(row)`` queues a tuple for ``insert_sql`` (an INSERT with $1.. placeholders)."""

    def __init__(self, store: PostgresStore, table: str, insert_sql: str) -> None:
        self.store = store
        self.table = table
        self.insert_sql = insert_sql
        self._queue: asyncio.Queue[Sequence[object]] = asyncio.Queue(QUEUE_LIMIT)
        self._held: list[Sequence[object]] = []  # taken off the queue, not yet handed to Postgres
        # No pause between turns: each turn waits for a row itself. Stopping writes what is still queued.
        self._loop = BackgroundLoop(f"{table}-writer", self._write_next_batch, final=self.flush)

    def add(self, row: Sequence[object]) -> None:
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            DROPPED.labels(self.table).inc()
            log.error("%s writer full; dropped a row", self.table)

    async def start(self) -> None:
        """Start the background writer."""
        await self._loop.start()

    async def healthy(self) -> bool:
        """Whether the background writer is running."""
        return await self._loop.healthy()

    async def stop(self) -> None:
        """Stop the writer and write every row still queued."""
        await self._loop.stop()

    async def flush(self) -> None:
        """Write everything queued now, in batches."""
        if self._held:
            batch, self._held = self._held, []
            await self._write(batch)
        while not self._queue.empty():
            batch = [self._queue.get_nowait() for _ in range(min(BATCH_SIZE, self._queue.qsize()))]
            await self._write(batch)

    async def _write(self, batch: list[Sequence[object]]) -> None:
        try:
            await self.store.pool.executemany(self.insert_sql, batch)
        except Exception:
            DROPPED.labels(self.table).inc(len(batch))
            log.exception("could not write %d rows to %s", len(batch), self.table)

    async def _write_next_batch(self) -> None:
        # Wait for a row, then a little longer so that the rows of a burst share one INSERT. The first
        # row waits in ``_held``, not in a local: a stop() during the pause flushes it with the rest.
        self._held.append(await self._queue.get())
        await asyncio.sleep(FLUSH_INTERVAL_S)
        batch, self._held = self._held, []
        while not self._queue.empty() and len(batch) < BATCH_SIZE:
            batch.append(self._queue.get_nowait())
        await self._write(batch)
