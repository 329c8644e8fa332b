"""Tenants in Postgres, with their quotas (0/unlimited is NULL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event
from services.common.errors import AlreadyExists


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    requests_per_day: int | None
    tokens_per_day: int | None
    daily_budget_usd: float | None
    created_at: datetime


_TENANT_COLUMNS = "id, name, requests_per_day, tokens_per_day, daily_budget_usd, created_at"
# What an update may change; anything else in ``changes`` is ignored, never put into SQL.
_UPDATABLE = ("name", "requests_per_day", "tokens_per_day", "daily_budget_usd")


def _tenant(row: asyncpg.Record) -> TenantRecord:
    values = dict(row)
    budget = values.pop("daily_budget_usd")
    return TenantRecord(**values, daily_budget_usd=float(budget) if budget is not None else None)


class TenantRepository(PostgresRepository):
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = $1", tenant_id)
        return _tenant(row) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self.pool.fetch(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY created_at, id")
        return [_tenant(r) for r in rows]

    async def create_tenant(
        self,
        *,
        tenant_id: str,
        name: str,
        requests_per_day: int | None,
        tokens_per_day: int | None,
        daily_budget_usd: float | None,
        audit: AuditEvent | None = None,
    ) -> TenantRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO tenants (id, name, requests_per_day, tokens_per_day, daily_budget_usd)
                        VALUES ($1, $2, $3, $4, $5) RETURNING {_TENANT_COLUMNS}""",
                    tenant_id,
                    name,
                    requests_per_day,
                    tokens_per_day,
                    daily_budget_usd,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("a tenant with this id or name exists", code="tenant_exists") from None
            await insert_audit_event(conn, audit)
        return _tenant(row)

    async def update_tenant(
        self, tenant_id: str, changes: dict[str, Any], audit: AuditEvent | None = None
    ) -> TenantRecord | None:
        columns = [c for c in _UPDATABLE if c in changes]
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2)) or "id = id"
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"UPDATE tenants SET {assignments} WHERE id = $1 RETURNING {_TENANT_COLUMNS}",
                    tenant_id,
                    *(changes[c] for c in columns),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("a tenant with this name exists", code="tenant_exists") from None
            if row is not None:
                await insert_audit_event(conn, audit)
        return _tenant(row) if row else None
