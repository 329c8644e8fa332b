"""Users in Postgres: accounts, their sign-in failures and locks, and the first admin."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event
from services.common.errors import AlreadyExists, NotFound


@dataclass(frozen=True)
class UserRecord:
    id: str
    tenant_id: str
    email: str
    role: str
    password_hash: str | None
    is_active: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime


USER_COLUMNS = "id, tenant_id, email, role, password_hash, is_active, failed_logins, locked_until, created_at"


class UserRepository(PostgresRepository):
    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self.pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return UserRecord(**dict(row)) if row else None

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        row = await self.pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE email = $1", email)
        return UserRecord(**dict(row)) if row else None

    async def create_user(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        role: str,
        tenant_id: str,
        audit: AuditEvent | None = None,
    ) -> UserRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO users (id, tenant_id, email, password_hash, role)
                        VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}""",
                    user_id,
                    tenant_id,
                    email,
                    password_hash,
                    role,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("an account with this email exists", code="email_taken") from None
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"no tenant {tenant_id!r}", code="tenant_not_found") from None
            await insert_audit_event(conn, audit)
        return UserRecord(**dict(row))

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self.pool.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash
        )

    async def update_user(
        self, user_id: str, *, active: bool | None, role: str | None, audit: AuditEvent | None = None
    ) -> UserRecord | None:
        """Switch an account on or off and/or change its role, in one transaction with its audit row.
        Switching it off also revokes every one of its sessions, so switching it back on later does
        not revive them; so does taking admin away, as an access token carries the role it was issued
        with. None if there is no such account."""
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval("SELECT role FROM users WHERE id = $1 FOR UPDATE", user_id)
            row = await conn.fetchrow(
                f"""UPDATE users
                       SET is_active = COALESCE($2, is_active), role = COALESCE($3, role), updated_at = now()
                     WHERE id = $1
                 RETURNING {USER_COLUMNS}""",
                user_id,
                active,
                role,
            )
            if row is None:
                return None
            if active is False or (before == "admin" and row["role"] != "admin"):
                await conn.execute(
                    "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
                )
            await insert_audit_event(conn, audit)
        return UserRecord(**dict(row))

    async def record_login_failure(self, user_id: str, window_s: float) -> int:
        """Count one failure atomically (parallel guesses each count); failures older than the window
        are forgotten first. Returns the consecutive failures including this one."""
        return await self.pool.fetchval(
            """UPDATE users
                  SET failed_logins = CASE
                        WHEN last_failed_login_at IS NULL
                          OR last_failed_login_at < now() - make_interval(secs => $2) THEN 1
                        ELSE failed_logins + 1 END,
                      last_failed_login_at = now()
                WHERE id = $1
            RETURNING failed_logins""",
            user_id,
            float(window_s),
        )

    async def lock_user(self, user_id: str, until: datetime) -> None:
        await self.pool.execute(
            "UPDATE users SET locked_until = GREATEST(locked_until, $2) WHERE id = $1", user_id, until
        )

    async def clear_login_failures(self, user_id: str) -> None:
        await self.pool.execute(
            """UPDATE users SET failed_logins = 0, locked_until = NULL, last_failed_login_at = NULL
                WHERE id = $1 AND (failed_logins > 0 OR locked_until IS NOT NULL)""",
            user_id,
        )

    async def bootstrap_admin(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        key_id: str,
        key_prefix: str,
        key_hash: str,
    ) -> bool:
        """Create the first admin and its API key unless an admin exists. True when created.

        A transaction-scoped advisory lock makes two auth replicas starting together create one admin.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('goblin-admin-bootstrap'))")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin')"):
                if password_hash is not None:
                    # An admin first started without a password gets the one configured now; a set
                    # password is never overwritten from the environment.
                    changed = await conn.fetchval(
                        """UPDATE users SET password_hash = $2, updated_at = now()
                            WHERE email = $1 AND role = 'admin' AND password_hash IS NULL RETURNING id""",
                        email,
                        password_hash,
                    )
                    if changed:
                        await insert_audit_event(conn, AuditEvent("admin_password_set", tenant_id="default"))
                return False
            await conn.execute(
                """INSERT INTO users (id, tenant_id, email, password_hash, role)
                   VALUES ($1, 'default', $2, $3, 'admin')""",
                user_id,
                email,
                password_hash,
            )
            await conn.execute(
                """INSERT INTO api_keys (id, user_id, tenant_id, name, prefix, key_hash, scopes)
                   VALUES ($1, $2, 'default', 'bootstrap admin', $3, $4, ARRAY['*'])""",
                key_id,
                user_id,
                key_prefix,
                key_hash,
            )
            await insert_audit_event(
                conn, AuditEvent("admin_bootstrapped", tenant_id="default", details={"api_key_id": key_id})
            )
            return True
