"""The database roles: each service's role uses its own schema, cannot touch another's, and appends audit
rows; the gateway's role can do nothing but append audit rows. Real PostgreSQL, real grants."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from services.common import db
from services.common.audit import write_event
from services.common.stores import PostgresStore
from tests.integration.test_migrations import SAMPLE_ROWS, execute, single_schema_database

# One table per service schema, with a row any service could try to add.
OWN_ROW = {
    "auth": ("tenants", "INSERT INTO {} (id, name) VALUES ('roles-test', 'roles-test')"),
    "router": ("providers", "INSERT INTO {} (name, kind) VALUES ('roles-test', 'openai')"),
    "executor": ("tasks", "INSERT INTO {} (id) VALUES ('roles-test')"),
    "rag": ("search_collections", "INSERT INTO {} (id, tenant_id, name, chroma_name) VALUES ('r', 't', 'n', 'c')"),
}
PASSWORDS = {service: f"pw-{service}-test" for service in db.SERVICE_ROLES}


def as_role(admin_url: str, service: str) -> str:
    """``admin_url`` with the service's role and password instead of the administrator."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{db.SERVICE_ROLES[service]}:{quote(PASSWORDS[service], safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture(scope="module")
def provisioned(new_database: Callable[[], str]) -> str:
    import asyncio

    url = new_database()
    asyncio.run(db.provision_roles(url, PASSWORDS))
    asyncio.run(db.provision_roles(url, PASSWORDS))  # idempotent
    return url


@pytest.mark.parametrize("service", list(OWN_ROW))
async def test_a_service_role_uses_its_own_schema_and_nothing_of_another(provisioned: str, service: str) -> None:
    conn = await db.connect(as_role(provisioned, service), service)
    try:
        table, insert = OWN_ROW[service]
        await conn.execute(insert.format(table))  # unqualified: search_path is its schema
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") >= 1
        # It owns its schema, so its own migrations can change it.
        await conn.execute("CREATE TABLE roles_test_scratch (id INT); DROP TABLE roles_test_scratch")
        for other, (other_table, other_insert) in OWN_ROW.items():
            if other == service:
                continue
            qualified = f"{other}.{other_table}"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {qualified}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(other_insert.format(qualified))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"CREATE TABLE {other}.intruder (id INT)")
    finally:
        await conn.close()


@pytest.mark.parametrize("service", list(db.SERVICE_ROLES))
async def test_every_role_appends_audit_rows_and_only_auth_reads_them(provisioned: str, service: str) -> None:
    conn = await db.connect(as_role(provisioned, service))
    try:
        async with conn.transaction():
            await write_event(conn, "roles_test", location=service, details={"n": 1})
        if service == "auth":
            assert await conn.fetchval("SELECT count(*) FROM audit.audit_events WHERE location = 'auth'") == 1
        else:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM audit.audit_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit.audit_events SET event_type = 'forged'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit.audit_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE audit.intruder (id INT)")
    finally:
        await conn.close()


async def test_the_gateway_role_can_only_append_audit_rows(provisioned: str) -> None:
    conn = await db.connect(as_role(provisioned, "gateway"))
    try:
        for schema, (table, insert) in OWN_ROW.items():
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {schema}.{table}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(insert.format(f"{schema}.{table}"))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {schema}.schema_migrations")
        await write_event(conn, "secret_detected", location="gateway")
    finally:
        await conn.close()


async def test_a_service_starts_as_its_role_and_leaves_the_audit_schema_to_its_owner(provisioned: str) -> None:
    store = PostgresStore(as_role(provisioned, "router"), schema="router", max_size=1)
    await store.start()  # migrates its own set (nothing pending) and skips audit, which it does not own
    try:
        assert await store.healthy()
        assert await store.pool.fetchval("SELECT count(*) FROM routing_requests") == 0
        assert await store.pool.fetchval("SELECT current_user") == "goblin_router"
    finally:
        await store.stop()


async def test_provisioning_hands_a_moved_single_schema_database_to_the_roles(new_database: Callable[[], str]) -> None:
    url = new_database()
    await single_schema_database(url)
    await execute(url, *SAMPLE_ROWS)
    await db.provision_roles(url, PASSWORDS)
    conn = await asyncpg.connect(url)
    try:
        owners = await conn.fetch(
            "SELECT schemaname, tableowner FROM pg_tables WHERE schemaname = ANY($1::text[])", list(OWN_ROW)
        )
        assert {(r["schemaname"], r["tableowner"]) for r in owners} == {(s, f"goblin_{s}") for s in OWN_ROW}
    finally:
        await conn.close()
    auth = await db.connect(as_role(url, "auth"), "auth")
    try:
        assert await auth.fetchval("SELECT daily_budget_usd FROM tenants WHERE id = 'acme'") == 2.5
        # Owner of the moved tables, so the next auth migration may alter them.
        await auth.execute("ALTER TABLE tenants ADD COLUMN roles_test INT; ALTER TABLE tenants DROP COLUMN roles_test")
    finally:
        await auth.close()
