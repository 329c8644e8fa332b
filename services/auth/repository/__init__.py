"""Postgres access for the auth service: the only package here that writes SQL, one module per area.

:class:`AuthRepository` is every area's repository over one pool; the service's areas each depend on
the few methods they use (their ``Protocol``), so the unit tests' fakes stay small.
"""

from __future__ import annotations

from services.auth.repository.api_keys import ApiKeyInfo, ApiKeyRecord, ApiKeyRepository
from services.auth.repository.audit import AuditEventRow, AuditRepository
from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event
from services.auth.repository.passkeys import PasskeyRecord, PasskeyRepository
from services.auth.repository.sessions import RefreshExchange, SessionRecord, SessionRepository
from services.auth.repository.signing_keys import SigningKeyRepository
from services.auth.repository.tenants import TenantRecord, TenantRepository
from services.auth.repository.users import UserRecord, UserRepository


class AuthRepository(
    UserRepository,
    TenantRepository,
    ApiKeyRepository,
    SessionRepository,
    PasskeyRepository,
    SigningKeyRepository,
    AuditRepository,
):
    """All of auth's tables: what the server and the ``goblin users|keys`` commands hand around."""


__all__ = [
    "ApiKeyInfo",
    "ApiKeyRecord",
    "ApiKeyRepository",
    "AuditEvent",
    "AuditEventRow",
    "AuditRepository",
    "AuthRepository",
    "PasskeyRecord",
    "PasskeyRepository",
    "PostgresRepository",
    "RefreshExchange",
    "SessionRecord",
    "SessionRepository",
    "SigningKeyRepository",
    "TenantRecord",
    "TenantRepository",
    "UserRecord",
    "UserRepository",
    "insert_audit_event",
]
