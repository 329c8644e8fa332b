"""Who is asking, as the gateway verified it, and the audit event a request leaves behind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.auth.repository import AuditEvent
from services.common.context import hash_user_id


@dataclass(frozen=True)
class Context:
    """The request's ``RequestContext`` as a domain object. It says who the gateway verified; what
    they may do is decided by :mod:`services.auth.permissions`, which rereads the account."""

    correlation_id: str = ""
    user_id: str = ""
    tenant_id: str = ""
    api_key_id: str = ""
    scopes: tuple[str, ...] = ()
    client_ip: str = ""

    def audit_event(self, event_type: str, *, tenant_id: str = "", user_id: str = "", **details: Any) -> AuditEvent:
        """An audit row for this request: the tenant (the request's unless given), the user only as a
        one-way hash, the correlation id, and ``details``, which must hold no secret."""
        return AuditEvent(
            event_type,
            tenant_id=tenant_id or self.tenant_id,
            user_hash=hash_user_id(user_id),
            correlation_id=self.correlation_id,
            details=details,
        )
