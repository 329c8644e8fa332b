"""The audit trail read back, for admins: auth's role is the one allowed to read ``audit.audit_events``
(services.common.db grants it), so the admin page's event list is served here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.auth.repository.base import PostgresRepository


@dataclass(frozen=True)
class AuditEventRow:
    """One row without its details or user hash: what happened, where, to which tenant, when."""

    id: int
    event_type: str
    location: str
    tenant_id: str
    correlation_id: str
    created_at: datetime


class AuditRepository(PostgresRepository):
    async def recent_audit_events(self, limit: int) -> list[AuditEventRow]:
        """The ``limit`` newest rows, newest first (the id follows insertion order)."""
        rows = await self.pool.fetch(
            """SELECT id, event_type, COALESCE(location, '') AS location, COALESCE(tenant_id, '') AS tenant_id,
                      COALESCE(correlation_id, '') AS correlation_id, created_at
               FROM audit.audit_events ORDER BY id DESC LIMIT $1""",
            limit,
        )
        return [AuditEventRow(**dict(r)) for r in rows]
