"""Postgres access for the auth service: the only module here that writes SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.stores import PostgresStore


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    user_active: bool


class AuthRepository:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    @property
    def pool(self):  # noqa: ANN201 - asyncpg.Pool, resolved per call so the servicer exists before the pool
        return self.store.pool

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow(
            """SELECT k.id, k.user_id, k.tenant_id, u.email, u.role, k.scopes, k.expires_at,
                      k.revoked_at, k.last_used_at, u.is_active AS user_active
                 FROM api_keys k JOIN users u ON u.id = k.user_id
                WHERE k.key_hash = $1""",
            key_hash,
        )
        return ApiKeyRecord(**dict(row)) if row else None

    async def touch_api_key(self, key_id: str) -> None:
        await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)

    async def bootstrap_admin(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        key_id: str,
        key_prefix: str,
        key_hash: str,
    ) -> bool:
        """Create the first admin and its API key unless an admin exists. True when created.

        A transaction-scoped advisory lock makes two auth replicas starting together create one admin.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('goblin-admin-bootstrap'))")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin')"):
                return False
            await conn.execute(
                """INSERT INTO users (id, tenant_id, email, password_hash, role)
                   VALUES ($1, 'default', $2, $3, 'admin')""",
                user_id,
                email,
                password_hash,
            )
            await conn.execute(
                """INSERT INTO api_keys (id, user_id, tenant_id, name, prefix, key_hash, scopes)
                   VALUES ($1, $2, 'default', 'bootstrap admin', $3, $4, ARRAY['*'])""",
                key_id,
                user_id,
                key_prefix,
                key_hash,
            )
            await conn.execute(
                """INSERT INTO audit_events (event_type, tenant_id, details)
                   VALUES ('admin_bootstrapped', 'default', jsonb_build_object('api_key_id', $1::text))""",
                key_id,
            )
            return True
