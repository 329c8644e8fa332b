"""The audit trail: security-relevant events as rows of ``audit.audit_events``, never with the secret.

One statement writes every row, and :func:`audit_row` builds every row, whether it goes through the
batched :class:`AuditLog` (the gateway, the router) or :func:`write_event` inside the caller's own
transaction (auth, so an event and the change it records commit together). The table is named with its
schema: every service's connections search only their own schema.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from services.common.batch import BatchWriter
from services.common.journal import Journal
from services.common.stores import PostgresStore

# Idempotent on event_id: a journaled event written again after a kill is stored once (common/batch.py).
# No conflict target: naming one needs SELECT on it, and the service roles may only append here.
INSERT = """INSERT INTO audit.audit_events
    (event_type, location, tenant_id, user_hash, correlation_id, details, event_id)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT DO NOTHING"""

AuditRow = tuple[str, str | None, str | None, str | None, str | None, str, str]


def audit_row(
    event_type: str,
    *,
    location: str = "",
    tenant_id: str = "",
    user_hash: str = "",
    correlation_id: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditRow:
    """The parameters of :data:`INSERT` for one event; empty strings are stored as NULL.
    ``details`` must not hold secrets: callers pass types and counts."""
    return (
        event_type,
        location or None,
        tenant_id or None,
        user_hash or None,
        correlation_id or None,
        json.dumps(dict(details or {})),
        uuid.uuid4().hex,
    )


async def write_event(conn: asyncpg.Connection, event_type: str, **fields: Any) -> None:
    """Write one event on ``conn`` now, inside whatever transaction the caller has open.
    ``fields`` are :func:`audit_row`'s keyword arguments."""
    await conn.execute(INSERT, *audit_row(event_type, **fields))


class AuditLog(BatchWriter):
    """Events queued and written in batches by a background task: a request never waits on them. With a
    ``journal`` each event is also appended locally first, so none is lost to a kill or a Postgres outage."""

    def __init__(self, store: PostgresStore, *, journal: Journal | None = None) -> None:
        super().__init__(store, "audit_events", INSERT, journal=journal)

    def record(
        self,
        event_type: str,
        *,
        location: str = "",
        tenant_id: str = "",
        user_hash: str = "",
        correlation_id: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Queue one event. ``details`` must not hold secrets: callers pass types and counts."""
        self.add(
            audit_row(
                event_type,
                location=location,
                tenant_id=tenant_id,
                user_hash=user_hash,
                correlation_id=correlation_id,
                details=details,
            )
        )
