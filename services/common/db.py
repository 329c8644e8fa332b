"""PostgreSQL: connection pools, versioned migrations per service schema, and the service roles.

Each service owns one schema (``auth``, ``router``, ``executor``, ``rag``) and the migrations that build
it, in ``services/<service>/migrations``; the audit trail has its own schema, ``audit``, built by
``services/common/migrations``. A set's files are named ``NNNN_description.sql`` and applied in order,
each in its own transaction, recorded in ``<schema>.schema_migrations``. A session-level advisory lock
per schema serialises concurrent runners, so two processes starting at once apply each file once.

Migrations run with ``search_path`` = the schema, so their SQL is unqualified, and as the schema's
owner (``SET LOCAL ROLE`` when an administrator runs them), so the owning service can alter what they
create. A set whose schema belongs to a role the caller is not a member of is left to that owner.

Before service schemas existed, every table lived in ``public`` with one history,
``public.schema_migrations``. Such a database is adopted on first start: each set moves its tables with
``ALTER TABLE ... SET SCHEMA`` (every row kept), drops the foreign keys that crossed into another
service, and records its baseline as applied.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from services.common.telemetry import pg_connection_class

log = logging.getLogger(__name__)

# Advisory lock ids: (class, crc32 of the schema) per set; the single-schema layout's own lock, which
# its runners held while migrating, is taken again while a set moves out of ``public``.
MIGRATION_LOCK_CLASS = 0x60B1
SINGLE_SCHEMA_LOCK_ID = 0x60B11_0001
ROLES_LOCK_ID = 0x60B11_0002
# The last version of the single-schema layout: the baselines describe exactly that state.
SINGLE_SCHEMA_VERSION = 2
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class SchemaSet:
    """One schema and the migrations that build it. ``source`` is the package whose ``migrations``
    folder holds them, or a directory; ``tables`` are the tables it owns (the ones it takes out of
    ``public`` when it adopts a single-schema database)."""

    schema: str
    source: str | Path
    tables: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.schema):
            raise ValueError(f"schema name {self.schema!r} must be lower-case letters, digits and underscores")

    @property
    def directory(self) -> Path:
        if isinstance(self.source, Path):
            return self.source
        return Path(str(resources.files(self.source) / "migrations"))

    @property
    def lock_key(self) -> int:
        return zlib.crc32(self.schema.encode()) & 0x7FFF_FFFF

    def migrations(self) -> list[Migration]:
        return load_migrations(self.directory)


AUDIT = SchemaSet("audit", "services.common", ("audit_events",))
AUTH = SchemaSet(
    "auth", "services.auth", ("tenants", "users", "api_keys", "sessions", "webauthn_credentials", "signing_keys")
)
ROUTER = SchemaSet(
    "router",
    "services.router",
    (
        "providers",
        "provider_credentials",
        "model_configs",
        "global_settings",
        "routing_providers",
        "provider_metrics",
        "provider_policies",
        "routing_requests",
    ),
)
EXECUTOR = SchemaSet("executor", "services.executor", ("tasks", "task_events"))
RAG = SchemaSet("rag", "services.rag", ("search_collections", "search_documents"))
# In the order ``migrate_all`` applies them: the audit trail first, since every service writes to it.
SETS: dict[str, SchemaSet] = {s.schema: s for s in (AUDIT, AUTH, ROUTER, EXECUTOR, RAG)}

# The database role of each service that uses PostgreSQL. A service role owns the schema of its name;
# the gateway owns none (it only appends audit rows).
SERVICE_ROLES: dict[str, str] = {
    "auth": "goblin_auth",
    "router": "goblin_router",
    "executor": "goblin_executor",
    "rag": "goblin_rag",
    "gateway": "goblin_gateway",
}
AUDIT_READERS = ("auth",)  # serves the admins' view of the audit trail


def load_migrations(directory: Path) -> list[Migration]:
    """The migration files in version order; refuses gaps, duplicates and misnamed files."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name} is not named NNNN_description.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {migration.version:04d} out of sequence (expected {expected:04d})")
    return migrations


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (only our own lower-case names are ever passed)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


async def connect(dsn: str, schema: str | None = None) -> asyncpg.Connection:
    """One connection; with ``schema``, its ``search_path`` is that schema alone."""
    settings = {"search_path": _ident(schema)} if schema else None
    return await asyncpg.connect(dsn, server_settings=settings)


async def migrate(dsn: str, schema_set: SchemaSet) -> list[int]:
    """Apply the set's pending migrations; returns the versions applied now (empty when up to date,
    or when the schema belongs to a role this connection may not act as)."""
    migrations = schema_set.migrations()
    conn = await connect(dsn, schema_set.schema)
    try:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", MIGRATION_LOCK_CLASS, schema_set.lock_key)
        try:
            owner = await _own_schema(conn, schema_set.schema)
            if owner is None:
                return []
            async with conn.transaction():
                await _act_as(conn, owner)
                await conn.execute(
                    """CREATE TABLE IF NOT EXISTS schema_migrations (
                           version    INTEGER PRIMARY KEY,
                           name       TEXT NOT NULL,
                           checksum   TEXT NOT NULL,
                           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
                )
            await _adopt_single_schema_layout(conn, schema_set, migrations)
            return await _apply(conn, schema_set, migrations, owner)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", MIGRATION_LOCK_CLASS, schema_set.lock_key)
    finally:
        await conn.close()


async def migrate_all(dsn: str) -> dict[str, list[int]]:
    """Every set (``goblin migrate``, ``goblin up``): the versions applied now, by schema."""
    return {schema: await migrate(dsn, schema_set) for schema, schema_set in SETS.items()}


async def _own_schema(conn: asyncpg.Connection, schema: str) -> str | None:
    """The schema's owner, creating the schema (owned by us) if it is missing; None when it belongs to
    a role we may not act as, whose own runs keep it current."""
    row = await conn.fetchrow(
        """SELECT pg_get_userbyid(nspowner) AS owner, pg_has_role(current_user, nspowner, 'MEMBER') AS member
             FROM pg_namespace WHERE nspname = $1""",
        schema,
    )
    if row is None:
        # CREATE SCHEMA checks the database privilege before IF NOT EXISTS: look first.
        await conn.execute(f"CREATE SCHEMA {_ident(schema)}")
        return await conn.fetchval("SELECT current_user")
    if not row["member"]:
        log.debug("schema %s belongs to %s, which migrates it; left alone", schema, row["owner"])
        return None
    return row["owner"]


async def _act_as(conn: asyncpg.Connection, owner: str) -> None:
    """Inside a transaction: create objects as the schema's owner, not as the administrator."""
    if owner != await conn.fetchval("SELECT current_user"):
        await conn.execute(f"SET LOCAL ROLE {_ident(owner)}")


async def _apply(conn: asyncpg.Connection, schema_set: SchemaSet, migrations: list[Migration], owner: str) -> list[int]:
    applied = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {schema_set.schema} {migration.version:04d}_{migration.name} "
                    "was changed after it was applied"
                )
            continue
        async with conn.transaction():
            await _act_as(conn, owner)
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied migration %s %04d_%s", schema_set.schema, migration.version, migration.name)
        done.append(migration.version)
    return done


async def _adopt_single_schema_layout(
    conn: asyncpg.Connection, schema_set: SchemaSet, migrations: list[Migration]
) -> None:
    """Move the set's tables out of a single-schema database (see the module docstring)."""
    if not schema_set.tables or not await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL"):
        return
    await conn.execute("SELECT pg_advisory_lock($1)", SINGLE_SCHEMA_LOCK_ID)
    try:
        present = [t for t in schema_set.tables if await conn.fetchval("SELECT to_regclass($1)", f"public.{t}")]
        if not present:
            return
        async with conn.transaction():
            version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM public.schema_migrations")
            if version != SINGLE_SCHEMA_VERSION:
                raise MigrationError(
                    f"this database has the single-schema layout at version {version:04d}; it moves to service "
                    f"schemas only from {SINGLE_SCHEMA_VERSION:04d} (migrate it with the previous release first)"
                )
            for table in present:
                await conn.execute(f"ALTER TABLE public.{_ident(table)} SET SCHEMA {_ident(schema_set.schema)}")
            await _drop_foreign_keys_across(conn, schema_set.schema)
            baseline = migrations[0]
            await conn.execute(
                """INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)
                   ON CONFLICT (version) DO NOTHING""",
                baseline.version,
                baseline.name,
                baseline.checksum,
            )
            left = [t for s in SETS.values() for t in s.tables]
            if not await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1::text[])", left
            ):
                # Every set has moved: each schema now keeps its own history.
                await conn.execute("DROP TABLE public.schema_migrations")
        log.info("moved %s from public to schema %s", ", ".join(present), schema_set.schema)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SINGLE_SCHEMA_LOCK_ID)


async def _drop_foreign_keys_across(conn: asyncpg.Connection, schema: str) -> None:
    """Drop every foreign key between this schema and another: no service references another's rows."""
    statements = await conn.fetch(
        """SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS sql
             FROM pg_constraint c
             JOIN pg_class r ON r.oid = c.conrelid
             JOIN pg_class f ON f.oid = c.confrelid
            WHERE c.contype = 'f' AND r.relnamespace <> f.relnamespace
              AND $1::regnamespace IN (r.relnamespace, f.relnamespace)""",
        schema,
    )
    for row in statements:
        await conn.execute(row["sql"])


async def schema_version(dsn: str, schema_set: SchemaSet) -> int:
    """The set's latest applied version (0: none)."""
    conn = await connect(dsn)
    try:
        table = f"{schema_set.schema}.schema_migrations"
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return 0
        return await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")
    finally:
        await conn.close()


async def provision_roles(admin_dsn: str, passwords: Mapping[str, str | None] | None = None) -> None:
    """Make every set current, then give each service its own login role (idempotent).

    ``passwords`` by service name; a missing or None password leaves the role's password as it is
    (none: the embedded PostgreSQL trusts its Unix socket). Each service role owns its schema and
    everything in it; every role may append to ``audit.audit_events`` and nothing else outside its
    schema; the auth role may also read the audit trail. Run with a role that may create roles.
    """
    passwords = passwords or {}
    await migrate_all(admin_dsn)  # adopts a single-schema database first, so every table exists
    conn = await connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ROLES_LOCK_ID)
        try:
            for service, role in SERVICE_ROLES.items():
                await _ensure_role(conn, role, passwords.get(service))
            async with conn.transaction():
                for service, role in SERVICE_ROLES.items():
                    if service in SETS:
                        await _hand_over_schema(conn, service, role)
                await conn.execute("REVOKE ALL ON SCHEMA audit FROM PUBLIC")
                await conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA audit FROM PUBLIC")
                for service, role in SERVICE_ROLES.items():
                    await conn.execute(f"GRANT USAGE ON SCHEMA audit TO {_ident(role)}")
                    await conn.execute(f"GRANT INSERT ON audit.audit_events TO {_ident(role)}")
                    await conn.execute(f"GRANT USAGE ON SEQUENCE audit.audit_events_id_seq TO {_ident(role)}")
                    if service in AUDIT_READERS:
                        await conn.execute(f"GRANT SELECT ON audit.audit_events TO {_ident(role)}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ROLES_LOCK_ID)
    finally:
        await conn.close()


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str | None) -> None:
    # Roles belong to the whole cluster: another database's provisioning may create it at the same time.
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        try:
            await conn.execute(f"CREATE ROLE {_ident(role)} LOGIN")
        except asyncpg.DuplicateObjectError:
            pass
    if password is not None:
        # Utility statements take no parameters: format() quotes the literal.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)", role, password
        )
        await conn.execute(statement)


async def _hand_over_schema(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """``role`` owns ``schema`` and every table, view and free-standing sequence in it."""
    await conn.execute(f"ALTER SCHEMA {_ident(schema)} OWNER TO {_ident(role)}")
    await conn.execute(f"REVOKE ALL ON SCHEMA {_ident(schema)} FROM PUBLIC")
    statements = await conn.fetch(
        """SELECT format('ALTER %s %s OWNER TO %I',
                         CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                        WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                        ELSE 'TABLE' END,
                         c.oid::regclass, $2::text) AS sql
             FROM pg_class c
            WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
              -- a sequence that belongs to a column moves with its table
              AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT 1 FROM pg_depend d
                   WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))""",
        schema,
        role,
    )
    for row in statements:
        await conn.execute(row["sql"])


async def create_pool(dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` alone (unqualified SQL means the service's own tables)."""
    settings = {"search_path": _ident(schema)} if schema else None
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        server_settings=settings,
        connection_class=pg_connection_class(),  # statements are spans while tracing
    )


async def ping(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=2) as conn:
        return await conn.fetchval("SELECT 1") == 1
