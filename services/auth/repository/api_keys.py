"""API keys in Postgres: stored as SHA-256 of the secret, never the secret itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as credential verification sees it: joined with its owner's current role and state."""

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
    # The budgets the router enforces, forwarded in the principal (None: unlimited).
    tokens_per_day: int | None = None
    tenant_daily_budget_usd: float | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as its owner sees it in a listing."""

    id: str
    user_id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    tokens_per_day: int | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


_KEY_COLUMNS = (
    "id, user_id, tenant_id, name, prefix, scopes, tokens_per_day, expires_at, last_used_at, revoked_at, created_at"
)


class ApiKeyRepository(PostgresRepository):
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow(
            """SELECT k.id, k.user_id, k.tenant_id, u.email, u.role, k.scopes, k.expires_at,
                      k.revoked_at, k.last_used_at, u.is_active AS user_active, k.tokens_per_day,
                      t.daily_budget_usd AS tenant_daily_budget_usd
                 FROM api_keys k JOIN users u ON u.id = k.user_id JOIN tenants t ON t.id = k.tenant_id
                WHERE k.key_hash = $1""",
            key_hash,
        )
        if row is None:
            return None
        values = dict(row)
        budget = values.pop("tenant_daily_budget_usd")
        return ApiKeyRecord(**values, tenant_daily_budget_usd=float(budget) if budget is not None else None)

    async def touch_api_key(self, key_id: str) -> None:
        await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)

    async def create_api_key(
        self,
        *,
        key_id: str,
        user_id: str,
        tenant_id: str,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: list[str],
        expires_at: datetime | None,
        tokens_per_day: int | None,
        audit: AuditEvent | None = None,
    ) -> ApiKeyInfo:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys
                        (id, user_id, tenant_id, name, prefix, key_hash, scopes, expires_at, tokens_per_day)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_KEY_COLUMNS}""",
                key_id,
                user_id,
                tenant_id,
                name,
                prefix,
                key_hash,
                scopes,
                expires_at,
                tokens_per_day,
            )
            await insert_audit_event(conn, audit)
        return ApiKeyInfo(**dict(row))

    async def get_api_key(self, key_id: str) -> ApiKeyInfo | None:
        row = await self.pool.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return ApiKeyInfo(**dict(row)) if row else None

    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]:
        rows = await self.pool.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id", user_id
        )
        return [ApiKeyInfo(**dict(r)) for r in rows]

    async def revoke_api_key(self, key_id: str, audit: AuditEvent | None = None) -> bool:
        """True when this call revoked it (False: already revoked or unknown)."""
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id",
                key_id,
            )
            if done:
                await insert_audit_event(conn, audit)
        return done is not None
