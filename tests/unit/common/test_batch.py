"""BatchWriter against a real PostgreSQL: rows written in the background, nothing lost on stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.common import batch
from services.common.batch import BatchWriter
from services.common.stores import PostgresStore

INSERT = "INSERT INTO batch_rows (n) VALUES ($1)"


@pytest.fixture
async def store(new_database: Callable[[], str]) -> AsyncIterator[PostgresStore]:
    # A table of its own, not a migrated one: this is about the writer, not any service's schema.
    store = PostgresStore(new_database(), run_migrations=False)
    await store.start()
    await store.pool.execute("CREATE TABLE batch_rows (n INT NOT NULL)")
    yield store
    await store.stop()


async def written(store: PostgresStore) -> list[int]:
    return [r["n"] for r in await store.pool.fetch("SELECT n FROM batch_rows ORDER BY n")]


def dropped(table: str) -> float:
    return REGISTRY.get_sample_value("goblin_batch_rows_dropped_total", {"table": table}) or 0.0


async def test_rows_reach_the_table_in_the_background(store: PostgresStore) -> None:
    writer = BatchWriter(store, "batch_rows", INSERT)
    await writer.start()
    assert await writer.healthy()
    for n in range(3):
        writer.add((n,))
    for _ in range(200):
        if len(await written(store)) == 3:
            break
        await asyncio.sleep(0.01)
    assert await written(store) == [0, 1, 2]
    await writer.stop()
    assert not await writer.healthy()


async def test_stop_during_the_pause_still_writes_the_row_taken_off_the_queue(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "FLUSH_INTERVAL_S", 3600)  # the writer holds the first row until stopped
    writer = BatchWriter(store, "batch_rows", INSERT)
    await writer.start()
    writer.add((1,))
    await asyncio.sleep(0.02)
    writer.add((2,))
    await writer.stop()
    assert await written(store) == [1, 2]


async def test_a_row_postgres_refuses_is_dropped_alone_and_counted_and_writing_goes_on(store: PostgresStore) -> None:
    writer = BatchWriter(store, "batch_rows", INSERT)
    before = dropped("batch_rows")
    writer.add((None,))  # NOT NULL: Postgres refuses the batch, so its rows are written one by one
    writer.add((7,))
    await writer.flush()
    assert dropped("batch_rows") == before + 1
    writer.add((8,))
    await writer.flush()
    assert await written(store) == [7, 8]


@pytest.mark.parametrize("error", ["DiskFullError", "TooManyConnectionsError", "AdminShutdownError"])
async def test_a_postgres_that_cannot_take_rows_now_is_retried_not_dropped(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    # Its disk full (SQLSTATE 53100 "could not extend file"), out of connections, shutting down: nothing
    # is wrong with the rows, so they wait and are written once it can take them.
    monkeypatch.setattr(batch, "RETRY_FIRST_S", 0.01)
    failures = 3
    real = store.pool

    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        async def executemany(self, sql: str, rows: list) -> None:
            self.calls += 1
            if self.calls <= failures:
                raise getattr(asyncpg.exceptions, error)("could not extend file: No space left on device")
            await real.executemany(sql, rows)

        async def execute(self, sql: str, *args: object) -> None:
            raise getattr(asyncpg.exceptions, error)("could not extend file: No space left on device")

    failing = Failing()
    monkeypatch.setattr(store, "_pool", failing)
    before = dropped("batch_rows")
    writer = BatchWriter(store, "batch_rows", INSERT)
    writer.add((1,))
    writer.add((2,))
    await writer.flush()
    assert failing.calls == failures + 1
    assert dropped("batch_rows") == before
    monkeypatch.undo()
    assert await written(store) == [1, 2]
