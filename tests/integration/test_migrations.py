"""Migrations against a real PostgreSQL: a schema per service, and the move from the single-schema layout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from services.common.db import AUTH, SETS, MigrationError, SchemaSet, migrate, migrate_all, schema_version

GOBLIN = Path(sys.executable).parent / "goblin"
# The two files every table lived in before service schemas: what today's databases were built with.
SINGLE_SCHEMA = Path(__file__).parent / "single_schema"


async def tables(url: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def single_schema_database(url: str, up_to: int = 2) -> None:
    """Build ``url`` as the single-schema code did: every file in ``public``, its history in
    ``public.schema_migrations``."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                   checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        for path in sorted(SINGLE_SCHEMA.glob("*.sql"))[:up_to]:
            sql = path.read_text(encoding="utf-8")
            version, name = int(path.stem[:4]), path.stem[5:]
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    version,
                    name,
                    hashlib.sha256(sql.encode()).hexdigest(),
                )
    finally:
        await conn.close()


SAMPLE_ROWS = [
    "INSERT INTO tenants (id, name, daily_budget_usd) VALUES ('acme', 'Acme', 2.5)",
    "INSERT INTO users (id, tenant_id, email, role) VALUES ('u1', 'acme', 'a@acme.test', 'admin')",
    "INSERT INTO api_keys (id, user_id, tenant_id, name, prefix, key_hash, tokens_per_day) "
    "VALUES ('k1', 'u1', 'acme', 'ci', 'gob_k1', 'hash-k1', 5000)",
    "INSERT INTO sessions (id, user_id, tenant_id, refresh_family, expires_at, auth_method) "
    "VALUES ('s1', 'u1', 'acme', 'f1', now() + interval '1 day', 'passkey')",
    "INSERT INTO webauthn_credentials (id, user_id, credential_id, public_key) VALUES ('w1', 'u1', '\\x01', '\\x02')",
    "INSERT INTO signing_keys (kid, algorithm, state, private_key, kek_id, public_jwk) "
    "VALUES ('kid1', 'ES256', 'current', '\\x03', 'kek', '{}')",
    "INSERT INTO tasks (id, tenant_id, goblin) VALUES ('t1', 'acme', 'hello')",
    "INSERT INTO task_events (task_id, seq, kind, data) VALUES ('t1', 1, 'stdout', 'hi')",
    "INSERT INTO search_collections (id, tenant_id, name, chroma_name) VALUES ('c1', 'acme', 'docs', 'acme_docs')",
    "INSERT INTO search_documents (id, collection_id, content_sha256) VALUES ('d1', 'c1', 'abc')",
    "INSERT INTO providers (name, kind) VALUES ('openai', 'openai')",
    "INSERT INTO provider_credentials (id, provider, tenant_id, ciphertext) VALUES ('pc1', 'openai', 'acme', '\\x04')",
    "INSERT INTO model_configs (id, provider, model) VALUES ('openai/gpt-4o-mini', 'openai', 'gpt-4o-mini')",
    "INSERT INTO global_settings (key, value) VALUES ('theme', '\"dark\"')",
    "INSERT INTO routing_providers (name, endpoint) VALUES ('local', '127.0.0.1:50052')",
    "INSERT INTO provider_metrics (provider) VALUES ('openai')",
    "INSERT INTO provider_policies (id, name, tenant_id, strategy) VALUES ('p1', 'cheap', 'acme', 'cheapest')",
    "INSERT INTO routing_requests (id, tenant_id, requested_model, outcome, cost_usd) "
    "VALUES ('r1', 'acme', 'openai/gpt-4o-mini', 'ok', 0.25)",
    "INSERT INTO audit_events (event_type, tenant_id, details) VALUES ('login_succeeded', 'acme', '{\"n\": 1}')",
]


# Rows of other services naming a tenant auth does not have: allowed once no foreign key crosses services.
ORPHANS = [
    "INSERT INTO executor.tasks (id, tenant_id) VALUES ('t2', 'elsewhere')",
    "INSERT INTO rag.search_collections (id, tenant_id, name, chroma_name) VALUES ('c2', 'elsewhere', 'd', 'e_d')",
    "INSERT INTO router.provider_policies (id, name, tenant_id, strategy) VALUES ('p2', 'x', 'elsewhere', 'fastest')",
    "INSERT INTO router.provider_credentials (id, provider, tenant_id, ciphertext) "
    "VALUES ('pc2', 'openai', 'elsewhere', '')",
]


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def structure(url: str) -> list[tuple[object, ...]]:
    """Columns, constraints and indexes of every service schema, comparable across databases."""
    conn = await asyncpg.connect(url)
    try:
        schemas = list(SETS)
        columns = await conn.fetch(
            """SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
                 FROM information_schema.columns WHERE table_schema = ANY($1::text[])""",
            schemas,
        )
        constraints = await conn.fetch(
            """SELECT n.nspname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
                 JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = ANY($1::text[])""",
            schemas,
        )
        indexes = await conn.fetch(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname = ANY($1::text[])", schemas
        )
        return sorted(tuple(r) for r in [*columns, *constraints, *indexes])
    finally:
        await conn.close()


async def test_every_set_builds_its_own_schema_and_migrating_twice_changes_nothing(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    assert {schema: await schema_version(url, s) for schema, s in SETS.items()} == dict.fromkeys(SETS, 0)
    applied = await migrate_all(url)
    assert applied == {schema: [m.version for m in s.migrations()] for schema, s in SETS.items()}
    for schema, schema_set in SETS.items():
        assert set(schema_set.tables) | {"schema_migrations"} == await tables(url, schema), schema
        assert await schema_version(url, schema_set) == len(schema_set.migrations())
    assert await tables(url, "public") == set()
    assert await migrate_all(url) == {schema: [] for schema in SETS}


async def test_concurrent_migrations_apply_each_file_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    results = await asyncio.gather(*(migrate_all(url) for _ in range(4)))
    for schema, schema_set in SETS.items():
        applied = sorted(v for result in results for v in result[schema])
        assert applied == [m.version for m in schema_set.migrations()], schema
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM auth.schema_migrations") == len(AUTH.migrations())
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
    for schema in SETS:
        assert f"{schema}: applied 0001" in messages
        assert f"{schema}: up to date" in messages
    assert asyncio.run(schema_version(url, AUTH)) == len(AUTH.migrations())


async def test_a_changed_migration_is_refused(new_database: Callable[[], str], tmp_path: Path) -> None:
    url = new_database()
    scratch = SchemaSet("scratch", tmp_path)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id INT);")
    assert await migrate(url, scratch) == [1]
    assert await tables(url, "scratch") == {"first_table", "schema_migrations"}, "unqualified SQL lands in its schema"
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id BIGINT);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(url, scratch)


async def test_a_failing_migration_leaves_nothing_half_done(new_database: Callable[[], str], tmp_path: Path) -> None:
    url = new_database()
    scratch = SchemaSet("scratch", tmp_path)
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE kept (id INT);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id INT); SELECT * FROM no_such_table;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(url, scratch)
    assert "kept" in await tables(url, "scratch")
    assert "half" not in await tables(url, "scratch")
    assert await schema_version(url, scratch) == 1


async def test_a_single_schema_database_moves_to_service_schemas_with_every_row(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    await single_schema_database(url)
    await execute(url, *SAMPLE_ROWS)

    applied = await migrate_all(url)
    # Each baseline is recorded, not run: the tables arrived with their rows.
    assert applied == {schema: [m.version for m in s.migrations()][1:] for schema, s in SETS.items()}
    assert await tables(url, "public") == set(), "every table moved, and the old history is gone"
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT daily_budget_usd FROM auth.tenants WHERE id = 'acme'") == 2.5
        assert await conn.fetchval("SELECT count(*) FROM auth.tenants") == 2, "'default' and 'acme'"
        assert await conn.fetchval("SELECT tokens_per_day FROM auth.api_keys WHERE id = 'k1'") == 5000
        assert await conn.fetchval("SELECT auth_method FROM auth.sessions WHERE id = 's1'") == "passkey"
        assert await conn.fetchval("SELECT count(*) FROM auth.webauthn_credentials") == 1
        assert await conn.fetchval("SELECT kid FROM auth.signing_keys") == "kid1"
        assert await conn.fetchval("SELECT data FROM executor.task_events WHERE task_id = 't1'") == "hi"
        assert await conn.fetchval("SELECT tenant_id FROM rag.search_collections") == "acme"
        assert await conn.fetchval("SELECT count(*) FROM rag.search_documents") == 1
        assert await conn.fetchval("SELECT tenant_id FROM router.provider_credentials") == "acme"
        assert await conn.fetchval("SELECT count(*) FROM router.model_configs") == 1
        assert await conn.fetchval("SELECT value FROM router.global_settings") == '"dark"'
        assert await conn.fetchval("SELECT count(*) FROM router.routing_providers") == 1
        assert await conn.fetchval("SELECT count(*) FROM router.provider_metrics") == 1
        assert await conn.fetchval("SELECT strategy FROM router.provider_policies") == "cheapest"
        assert float(await conn.fetchval("SELECT cost_usd FROM router.routing_requests")) == 0.25
        assert await conn.fetchval("SELECT details->>'n' FROM audit.audit_events") == "1"
        # The sequence moved with its table: new audit rows continue after the old ones.
        assert await conn.fetchval("INSERT INTO audit.audit_events (event_type) VALUES ('x') RETURNING id") == 2
        # No foreign key crosses services any more; the ones inside a service stay.
        for statement in ORPHANS:
            await conn.execute(statement)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("DELETE FROM auth.tenants WHERE id = 'acme'")  # its users still need it
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO executor.task_events (task_id, seq, kind, data) VALUES ('x', 1, 'stdout', '')"
            )
    finally:
        await conn.close()
    assert await migrate_all(url) == {schema: [] for schema in SETS}

    fresh = new_database()
    await migrate_all(fresh)
    assert await structure(url) == await structure(fresh), "a moved database looks exactly like a new one"


async def test_one_service_moves_only_its_own_tables(new_database: Callable[[], str]) -> None:
    url = new_database()
    await single_schema_database(url)
    await execute(url, *SAMPLE_ROWS)
    assert await migrate(url, AUTH) == []
    assert set(AUTH.tables) <= await tables(url, "auth")
    left = await tables(url, "public")
    assert "tasks" in left and "schema_migrations" in left, "the others move when their services start"
    # A foreign key from another service's table into auth was dropped as auth moved.
    await execute(url, "INSERT INTO tasks (id, tenant_id) VALUES ('t2', 'no-such-tenant')")
    await migrate_all(url)
    assert await tables(url, "public") == set()


async def test_a_single_schema_database_not_at_its_last_version_is_refused(new_database: Callable[[], str]) -> None:
    url = new_database()
    await single_schema_database(url, up_to=1)
    with pytest.raises(MigrationError, match="at version 0001"):
        await migrate(url, AUTH)
    assert "tenants" in await tables(url, "public"), "nothing moved"
