"""What every auth repository shares: the pool, and the one way an audit row is written.

Security events are written to ``audit_events`` in the same transaction as the change they record, so
there is never a key without its ``api_key_created`` row, nor a row for a change that rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.common.audit import write_event
from services.common.stores import PostgresStore


@dataclass(frozen=True)
class AuditEvent:
    event_type: str
    tenant_id: str = ""
    user_hash: str = ""
    correlation_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


async def insert_audit_event(conn: asyncpg.Connection, event: AuditEvent | None) -> None:
    """Write ``event`` (nothing for None) on ``conn``, inside the caller's transaction: every auth audit
    row goes through here."""
    if event is None:
        return
    await write_event(
        conn,
        event.event_type,
        location="auth",
        tenant_id=event.tenant_id,
        user_hash=event.user_hash,
        correlation_id=event.correlation_id,
        details=event.details,
    )


class PostgresRepository:
    """Base of the area repositories: one :class:`PostgresStore`, its pool looked up on each call."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    @property
    def pool(self) -> asyncpg.Pool:
        # Resolved per call: the servicer exists before the pool does.
        return self.store.pool

    async def audit(self, event: AuditEvent) -> None:
        """Record an event that goes with no other change (a refused sign-in, a quota running out)."""
        async with self.pool.acquire() as conn:
            await insert_audit_event(conn, event)
