"""Sessions in Postgres: one row per refresh token, a family (``refresh_family``) per sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event
from services.auth.repository.users import USER_COLUMNS, UserRecord


@dataclass(frozen=True)
class SessionRecord:
    id: str
    refresh_family: str
    user_id: str
    tenant_id: str
    is_admin: bool
    auth_method: str
    expires_at: datetime
    revoked_at: datetime | None
    rotated_at: datetime | None


@dataclass(frozen=True)
class RefreshExchange:
    """What presenting a refresh token did. ``rotated``: a new token replaced it; ``reused``: it had
    been exchanged before, and its whole family is now revoked; the rest changed nothing."""

    outcome: Literal["rotated", "reused", "revoked", "expired", "unknown", "inactive"]
    session: SessionRecord | None = None
    user: UserRecord | None = None


_SESSION_COLUMNS = "id, refresh_family, user_id, tenant_id, is_admin, auth_method, expires_at, revoked_at, rotated_at"


class SessionRepository(PostgresRepository):
    async def create_session(
        self,
        *,
        session_id: str,
        family: str,
        user_id: str,
        tenant_id: str,
        refresh_hash: str,
        is_admin: bool,
        auth_method: str,
        ip_hash: str | None,
        expires_at: datetime,
        audit: AuditEvent | None = None,
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO sessions (id, user_id, tenant_id, refresh_family, refresh_hash, is_admin,
                                         auth_method, ip_hash, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                session_id,
                user_id,
                tenant_id,
                family,
                refresh_hash,
                is_admin,
                auth_method,
                ip_hash,
                expires_at,
            )
            await insert_audit_event(conn, audit)

    async def exchange_refresh_token(self, old_hash: str, new_id: str, new_hash: str) -> RefreshExchange:
        """Rotate a refresh token under a row lock, so two parallel uses of one token cannot both win:
        the second sees it rotated, which is reuse."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE refresh_hash = $1 FOR UPDATE", old_hash
            )
            if row is None:
                return RefreshExchange("unknown")
            session = SessionRecord(**dict(row))
            if session.revoked_at is not None:
                return RefreshExchange("revoked", session)
            if session.rotated_at is not None:
                await self._revoke_family(conn, session.refresh_family)
                return RefreshExchange("reused", session)
            if session.expires_at <= await conn.fetchval("SELECT now()"):
                return RefreshExchange("expired", session)
            # Read in the same transaction: a user disabled a moment ago gets no new token.
            user_row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", session.user_id)
            user = UserRecord(**dict(user_row)) if user_row else None
            if user is None or not user.is_active:
                await self._revoke_family(conn, session.refresh_family)
                return RefreshExchange("inactive", session, user)
            await conn.execute("UPDATE sessions SET rotated_at = now(), last_seen_at = now() WHERE id = $1", session.id)
            await conn.execute(
                """INSERT INTO sessions (id, user_id, tenant_id, refresh_family, refresh_hash, is_admin,
                                         auth_method, ip_hash, expires_at)
                   SELECT $2, user_id, tenant_id, refresh_family, $3, is_admin, auth_method, ip_hash,
                          expires_at
                     FROM sessions WHERE id = $1""",
                session.id,
                new_id,
                new_hash,
            )
            return RefreshExchange("rotated", session, user)

    @staticmethod
    async def _revoke_family(conn: asyncpg.Connection, family: str) -> int:
        result = await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE refresh_family = $1 AND revoked_at IS NULL", family
        )
        return int(result.split()[-1])

    async def find_session(self, refresh_hash: str) -> SessionRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE refresh_hash = $1", refresh_hash)
        return SessionRecord(**dict(row)) if row else None

    async def session_ended(self, family: str, user_id: str) -> bool:
        """Whether the sign-in ``family`` of ``user_id`` has ended: revoked, or its account disabled or gone.
        Any revoked row ends the family, since sign-out, reuse and deactivation revoke every row of it."""
        ended = await self.pool.fetchval(
            """SELECT NOT u.is_active
                      OR EXISTS (SELECT 1 FROM sessions s
                                  WHERE s.refresh_family = $1 AND s.revoked_at IS NOT NULL)
                 FROM users u WHERE u.id = $2""",
            family,
            user_id,
        )
        return ended is not False

    async def revoke_session_family(
        self, family: str, user_id: str, audit: AuditEvent | None = None
    ) -> datetime | None:
        """Revoke every refresh token of one sign-in of ``user_id``. Returns when the session would
        have expired (None if there was nothing to revoke)."""
        async with self.pool.acquire() as conn, conn.transaction():
            expires_at = await conn.fetchval(
                """UPDATE sessions SET revoked_at = now()
                    WHERE refresh_family = $1 AND user_id = $2 AND revoked_at IS NULL
                RETURNING expires_at""",
                family,
                user_id,
            )
            if expires_at is not None:
                await insert_audit_event(conn, audit)
        return expires_at
