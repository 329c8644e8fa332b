"""The audit trail: security-relevant events as rows of ``audit_events``, never with the secret."""

from __future__ import annotations

import json
from typing import Any

from services.common.batch import BatchWriter
from services.common.stores import PostgresStore

INSERT = """INSERT INTO audit_events (event_type, location, tenant_id, user_hash, correlation_id, details)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb)"""


class AuditLog(BatchWriter):
    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store, "audit_events", INSERT)

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
            (
                event_type,
                location or None,
                tenant_id or None,
                user_hash or None,
                correlation_id or None,
                json.dumps(details or {}),
            )
        )
