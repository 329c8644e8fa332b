"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from services.common.db import MigrationError, load_migrations, migrate, schema_version
from tests.unit.common.test_migrations_files import TABLES

GOBLIN = Path(sys.executable).parent / "goblin"


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_migrate_creates_every_table_and_is_idempotent(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert await schema_version(url) == 0
    applied = await migrate(url)
    assert applied == [m.version for m in load_migrations()]
    assert set(TABLES) | {"schema_migrations"} <= await tables(url)
    assert await migrate(url) == []
    assert await schema_version(url) == len(load_migrations())


async def test_concurrent_migrations_apply_each_file_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    results = await asyncio.gather(*(migrate(url) for _ in range(4)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        await conn.close()


def test_two_goblin_migrate_processes_at_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    env = {**os.environ, "DATABASE_URL": url}
    processes = [
        subprocess.Popen([str(GOBLIN), "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    messages = " ".join(err for _, err in outputs)
    assert "applied 0001" in messages
    assert "up to date" in messages
    assert asyncio.run(schema_version(url)) == len(load_migrations())


async def test_a_changed_migration_is_refused(new_database: Callable[[], str], tmp_path: Path) -> None:
    url = new_database()
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id INT);")
    assert await migrate(url, tmp_path) == [1]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id BIGINT);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(url, tmp_path)


async def test_a_failing_migration_leaves_nothing_half_done(new_database: Callable[[], str], tmp_path: Path) -> None:
    url = new_database()
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE kept (id INT);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id INT); SELECT * FROM no_such_table;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(url, tmp_path)
    assert "kept" in await tables(url)
    assert "half" not in await tables(url)
    assert await schema_version(url) == 1
