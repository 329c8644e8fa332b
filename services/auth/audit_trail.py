"""The audit trail for admins: the newest events of every service (the admin KPI page lists them)."""

from __future__ import annotations

from typing import Protocol

from services.auth.context import Context
from services.auth.permissions import Permissions
from services.auth.repository.audit import AuditEventRow
from services.common.errors import InvalidArgument

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class AuditStore(Protocol):
    async def recent_audit_events(self, limit: int) -> list[AuditEventRow]: ...


class AuditTrail:
    def __init__(self, store: AuditStore, *, permissions: Permissions) -> None:
        self.store = store
        self.permissions = permissions

    async def recent(self, ctx: Context, limit: int) -> list[AuditEventRow]:
        """The ``limit`` newest events (0: 50; at most 200), admin only: rows name every tenant."""
        await self.permissions.admin(ctx)
        if limit < 0 or limit > MAX_LIMIT:
            raise InvalidArgument(f"limit: 1..{MAX_LIMIT} (0 for {DEFAULT_LIMIT})")
        return await self.store.recent_audit_events(limit or DEFAULT_LIMIT)
