"""BatchWriter with its journal against a real PostgreSQL: rows the caller was told about survive a
SIGKILL of the writing process and a Postgres that goes away, and are stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from goblin_tools.embedded import EmbeddedPostgres
from services.common import batch
from services.common import journal as journal_module
from services.common.batch import BatchWriter
from services.common.journal import Journal
from services.common.stores import PostgresStore

ROOT = Path(__file__).resolve().parents[3]
TABLE = "CREATE TABLE IF NOT EXISTS books (id INT PRIMARY KEY, note TEXT)"
INSERT = "INSERT INTO books (id, note) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"


@pytest.fixture
async def dsn(new_database: Callable[[], str]) -> AsyncIterator[str]:
    url = new_database()
    conn = await asyncpg.connect(url)
    await conn.execute(TABLE)
    await conn.close()
    yield url


async def ids(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM books ORDER BY id")]
    finally:
        await conn.close()


async def eventually(check: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def metric(name: str, table: str = "books") -> float:
    return REGISTRY.get_sample_value(name, {"table": table}) or 0.0


async def test_rows_of_a_sigkilled_writer_are_written_once_at_the_next_start(dsn: str, tmp_path: Path) -> None:
    # A writer process: 100 rows "answered" (added), some written, then SIGKILL before the rest is.
    code = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        from services.common import batch
        from services.common.batch import BatchWriter
        from services.common.journal import Journal
        from services.common.stores import PostgresStore

        async def main():
            batch.FLUSH_INTERVAL_S = 0.05
            store = PostgresStore({dsn!r}, run_migrations=False)
            await store.start()
            writer = BatchWriter(store, "books", {INSERT!r}, journal=Journal(Path({str(tmp_path)!r}), "w"))
            await writer.start()
            for n in range(1, 51):
                writer.add((n, "first"))
            await asyncio.sleep(0.5)  # these reach Postgres (and stay journaled until the next commit)
            for n in range(51, 101):
                writer.add((n, "second"))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == -signal.SIGKILL
    before = await ids(dsn)
    assert 0 < len(before) < 100, before  # some written, the rest only journaled

    store = PostgresStore(dsn, run_migrations=False)
    await store.start()
    writer = BatchWriter(store, "books", INSERT, journal=Journal(tmp_path, "w"))
    await writer.start()
    try:
        await eventually(lambda: _has(dsn, 100))
        assert await ids(dsn) == list(range(1, 101))  # every row, each once
        assert metric("goblin_batch_rows_replayed_total") >= 100 - len(before)
    finally:
        await writer.stop()
        await store.stop()
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))  # all committed: none left


async def _has(url: str, count: int) -> bool:
    return len(await ids(url)) == count


async def test_postgres_away_then_back_loses_nothing_and_needs_no_restart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(batch, "FLUSH_INTERVAL_S", 0.05)
    monkeypatch.setattr(batch, "RETRY_MAX_S", 0.5)
    server = EmbeddedPostgres(tmp_path / "pg")
    url = server.create_database("books")
    conn = await asyncpg.connect(url)
    await conn.execute(TABLE)
    await conn.close()
    store = PostgresStore(url, run_migrations=False, max_size=2)
    await store.start()
    writer = BatchWriter(store, "books", INSERT, journal=Journal(tmp_path / "journal", "w"))
    await writer.start()
    try:
        writer.add((1, "before"))
        await eventually(lambda: _has(url, 1))
        retries = metric("goblin_batch_write_retries_total")
        server.stop()  # Postgres goes away
        for n in range(2, 40):
            writer.add((n, "while away"))
        await asyncio.sleep(1.5)
        assert metric("goblin_batch_write_retries_total") > retries  # it kept trying, dropped nothing
        server = EmbeddedPostgres(tmp_path / "pg")  # and comes back on the same socket
        await eventually(lambda: _has(url, 39))
        assert await ids(url) == list(range(1, 40))
    finally:
        await writer.stop()
        await store.stop()
        server.stop()


async def test_a_full_queue_defers_rows_to_the_journal_instead_of_dropping(
    dsn: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(batch, "QUEUE_LIMIT", 5)
    monkeypatch.setattr(batch, "FLUSH_INTERVAL_S", 0.05)
    store = PostgresStore(dsn, run_migrations=False)
    await store.start()
    writer = BatchWriter(store, "books", INSERT, journal=Journal(tmp_path, "w"))
    deferred, dropped = metric("goblin_batch_rows_deferred_total"), metric("goblin_batch_rows_dropped_total")
    for n in range(1, 21):  # the writer is not started: the queue fills at 5
        writer.add((n, "burst"))
    assert metric("goblin_batch_rows_deferred_total") == deferred + 15
    assert metric("goblin_batch_rows_dropped_total") == dropped
    await writer.start()
    try:
        writer.add((21, "after"))  # a commit after the deferral releases the journal for replay
        await eventually(lambda: _has(dsn, 21))
        assert await ids(dsn) == list(range(1, 22))
    finally:
        await writer.stop()
        await store.stop()


async def test_without_a_journal_a_full_queue_drops_and_counts(dsn: str, monkeypatch) -> None:
    monkeypatch.setattr(batch, "QUEUE_LIMIT", 2)
    store = PostgresStore(dsn, run_migrations=False)
    writer = BatchWriter(store, "books", INSERT)
    dropped = metric("goblin_batch_rows_dropped_total")
    for n in range(5):
        writer.add((n, "x"))
    assert metric("goblin_batch_rows_dropped_total") == dropped + 3


async def test_rows_neither_journaled_nor_written_at_stop_are_counted_as_dropped(
    dsn: str, tmp_path: Path, monkeypatch, caplog
) -> None:
    # GOBLIN_HOME full (the journal refuses every row) and Postgres away when the service stops: the rows
    # it answered meanwhile are gone with the process. Counted and logged, never silently.
    def no_space(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    store = PostgresStore(dsn, run_migrations=False)  # never started: its pool is Unavailable
    journal = Journal(tmp_path, "w")
    writer = BatchWriter(store, "books", INSERT, journal=journal)
    writer.add((1, "journaled"))
    monkeypatch.setattr(journal_module.os, "write", no_space)
    for n in range(2, 5):
        writer.add((n, "not journaled"))
    dropped = metric("goblin_batch_rows_dropped_total")
    await writer.stop()
    assert metric("goblin_batch_rows_dropped_total") == dropped + 3
    assert any("neither journaled nor written" in r.getMessage() for r in caplog.records)
