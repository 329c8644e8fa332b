"""Postgres access for the auth service: the only module here that writes SQL.

Security events are written to ``audit.audit_events`` in the same transaction as the change they record, so
there is never a key without its ``api_key_created`` row, nor a row for a change that rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import asyncpg

from services.auth.keys import NewSigningKey, Rotation, SigningKeyRecord
from services.common.audit import write_event
from services.common.errors import AlreadyExists, NotFound
from services.common.stores import PostgresStore


@dataclass(frozen=True)
class AuditEvent:
    event_type: str
    tenant_id: str = ""
    user_hash: str = ""
    correlation_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    user_active: bool
    # The budgets the router enforces, forwarded in the principal (None: unlimited).
    tokens_per_day: int | None = None
    tenant_daily_budget_usd: float | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    user_id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    tokens_per_day: int | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


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


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    requests_per_day: int | None
    tokens_per_day: int | None
    daily_budget_usd: float | None
    created_at: datetime


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


@dataclass(frozen=True)
class PasskeyRecord:
    id: str
    user_id: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: list[str]
    name: str
    backed_up: bool
    last_used_at: datetime | None
    created_at: datetime


_USER_COLUMNS = "id, tenant_id, email, role, password_hash, is_active, failed_logins, locked_until, created_at"
_KEY_COLUMNS = (
    "id, user_id, tenant_id, name, prefix, scopes, tokens_per_day, expires_at, last_used_at, revoked_at, created_at"
)
_SESSION_COLUMNS = "id, refresh_family, user_id, tenant_id, is_admin, auth_method, expires_at, revoked_at, rotated_at"
_PASSKEY_COLUMNS = (
    "id, user_id, credential_id, public_key, sign_count, transports, name, backed_up, last_used_at, created_at"
)
_SIGNING_KEY_COLUMNS = (
    "kid, algorithm, state, private_key, kek_id, public_jwk, created_at, activated_at, retired_at, verify_until"
)


def _tenant(row: asyncpg.Record) -> TenantRecord:
    values = dict(row)
    budget = values.pop("daily_budget_usd")
    return TenantRecord(**values, daily_budget_usd=float(budget) if budget is not None else None)


def _signing_key(row: asyncpg.Record) -> SigningKeyRecord:
    values = dict(row)
    values["public_jwk"] = json.loads(values["public_jwk"])
    return SigningKeyRecord(**values)


async def _audit(conn: asyncpg.Connection, event: AuditEvent | None) -> None:
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


class AuthRepository:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    @property
    def pool(self) -> asyncpg.Pool:
        # Resolved per call: the servicer exists before the pool does.
        return self.store.pool

    async def audit(self, event: AuditEvent) -> None:
        async with self.pool.acquire() as conn:
            await _audit(conn, event)

    # -- users ------------------------------------------------------------------------------------
    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return UserRecord(**dict(row)) if row else None

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", email)
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
                        VALUES ($1, $2, $3, $4, $5) RETURNING {_USER_COLUMNS}""",
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
            await _audit(conn, audit)
        return UserRecord(**dict(row))

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self.pool.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash
        )

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

    # -- tenants ----------------------------------------------------------------------------------
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        row = await self.pool.fetchrow(
            """SELECT id, name, requests_per_day, tokens_per_day, daily_budget_usd, created_at
                 FROM tenants WHERE id = $1""",
            tenant_id,
        )
        return _tenant(row) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self.pool.fetch(
            """SELECT id, name, requests_per_day, tokens_per_day, daily_budget_usd, created_at
                 FROM tenants ORDER BY created_at, id"""
        )
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
                    """INSERT INTO tenants (id, name, requests_per_day, tokens_per_day, daily_budget_usd)
                       VALUES ($1, $2, $3, $4, $5)
                       RETURNING id, name, requests_per_day, tokens_per_day, daily_budget_usd, created_at""",
                    tenant_id,
                    name,
                    requests_per_day,
                    tokens_per_day,
                    daily_budget_usd,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("a tenant with this id or name exists", code="tenant_exists") from None
            await _audit(conn, audit)
        return _tenant(row)

    async def update_tenant(
        self, tenant_id: str, changes: dict[str, Any], audit: AuditEvent | None = None
    ) -> TenantRecord | None:
        allowed = ("name", "requests_per_day", "tokens_per_day", "daily_budget_usd")
        columns = [c for c in allowed if c in changes]
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2)) or "id = id"
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""UPDATE tenants SET {assignments} WHERE id = $1
                        RETURNING id, name, requests_per_day, tokens_per_day, daily_budget_usd, created_at""",
                    tenant_id,
                    *(changes[c] for c in columns),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("a tenant with this name exists", code="tenant_exists") from None
            if row is not None:
                await _audit(conn, audit)
        return _tenant(row) if row else None

    # -- API keys ---------------------------------------------------------------------------------
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow(
            """SELECT k.id, k.user_id, k.tenant_id, u.email, u.role, k.scopes, k.expires_at,
                      k.revoked_at, k.last_used_at, u.is_active AS user_active, k.tokens_per_day,
                      t.daily_budget_usd AS tenant_daily_budget_usd
                 FROM api_keys k JOIN users u ON u.id = k.user_id JOIN tenants t ON t.id = k.tenant_id
                WHERE k.key_hash = $1""",
            key_hash,
        )
        if row is None:
            return None
        values = dict(row)
        budget = values.pop("tenant_daily_budget_usd")
        return ApiKeyRecord(**values, tenant_daily_budget_usd=float(budget) if budget is not None else None)

    async def touch_api_key(self, key_id: str) -> None:
        await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)

    async def create_api_key(
        self,
        *,
        key_id: str,
        user_id: str,
        tenant_id: str,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: list[str],
        expires_at: datetime | None,
        tokens_per_day: int | None,
        audit: AuditEvent | None = None,
    ) -> ApiKeyInfo:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys
                        (id, user_id, tenant_id, name, prefix, key_hash, scopes, expires_at, tokens_per_day)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_KEY_COLUMNS}""",
                key_id,
                user_id,
                tenant_id,
                name,
                prefix,
                key_hash,
                scopes,
                expires_at,
                tokens_per_day,
            )
            await _audit(conn, audit)
        return ApiKeyInfo(**dict(row))

    async def get_api_key(self, key_id: str) -> ApiKeyInfo | None:
        row = await self.pool.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return ApiKeyInfo(**dict(row)) if row else None

    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]:
        rows = await self.pool.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id", user_id
        )
        return [ApiKeyInfo(**dict(r)) for r in rows]

    async def revoke_api_key(self, key_id: str, audit: AuditEvent | None = None) -> bool:
        """True when this call revoked it (False: already revoked or unknown)."""
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id",
                key_id,
            )
            if done:
                await _audit(conn, audit)
        return done is not None

    # -- sessions and refresh tokens --------------------------------------------------------------
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
            await _audit(conn, audit)

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
            user_row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", session.user_id)
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
                await _audit(conn, audit)
        return expires_at

    # -- passkeys ---------------------------------------------------------------------------------
    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [PasskeyRecord(**dict(r)) for r in rows]

    async def find_passkey(self, credential_id: bytes) -> PasskeyRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE credential_id = $1", credential_id
        )
        return PasskeyRecord(**dict(row)) if row else None

    async def add_passkey(
        self,
        *,
        passkey_id: str,
        user_id: str,
        credential_id: bytes,
        public_key: bytes,
        sign_count: int,
        transports: list[str],
        name: str,
        backed_up: bool,
        audit: AuditEvent | None = None,
    ) -> PasskeyRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO webauthn_credentials
                            (id, user_id, credential_id, public_key, sign_count, transports, name, backed_up)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_PASSKEY_COLUMNS}""",
                    passkey_id,
                    user_id,
                    credential_id,
                    public_key,
                    sign_count,
                    transports,
                    name,
                    backed_up,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("this passkey is already registered", code="passkey_exists") from None
            await _audit(conn, audit)
        return PasskeyRecord(**dict(row))

    async def record_passkey_use(self, passkey_id: str, seen_count: int, new_count: int, backed_up: bool) -> bool:
        """Store the new sign count only if nobody used the passkey since we read ``seen_count``
        (compare-and-set): two assertions with one counter value cannot both succeed."""
        done = await self.pool.fetchval(
            """UPDATE webauthn_credentials
                  SET sign_count = $3, backed_up = $4, last_used_at = now()
                WHERE id = $1 AND sign_count = $2
            RETURNING id""",
            passkey_id,
            seen_count,
            new_count,
            backed_up,
        )
        return done is not None

    async def delete_passkey(self, passkey_id: str, user_id: str, audit: AuditEvent | None = None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "DELETE FROM webauthn_credentials WHERE id = $1 AND user_id = $2 RETURNING id",
                passkey_id,
                user_id,
            )
            if done:
                await _audit(conn, audit)
        return done is not None

    # -- signing keys -----------------------------------------------------------------------------
    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        rows = await self.pool.fetch(
            f"""SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys
                 WHERE state <> 'retired' OR verify_until > now()
                 ORDER BY created_at"""
        )
        return [_signing_key(r) for r in rows]

    @staticmethod
    async def _insert_signing_key(conn: asyncpg.Connection, key: NewSigningKey, state: str) -> None:
        await conn.execute(
            """INSERT INTO signing_keys (kid, algorithm, state, private_key, kek_id, public_jwk, activated_at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, CASE WHEN $3 = 'current' THEN now() END)""",
            key.kid,
            key.algorithm,
            state,
            key.sealed_private_key,
            key.kek_id,
            json.dumps(key.public_jwk),
        )

    async def ensure_signing_keys(self, make_key: Callable[[], NewSigningKey]) -> list[str]:
        """Make a current and a standby key where missing; kids created. Replicas starting together
        take turns on an advisory lock, so they agree on one pair."""
        created: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('goblin-signing-keys'))")
            states = {
                r["state"]: r["kid"]
                for r in await conn.fetch("SELECT kid, state FROM signing_keys WHERE state <> 'retired'")
            }
            if "current" not in states:
                if "standby" in states:
                    await conn.execute(
                        "UPDATE signing_keys SET state = 'current', activated_at = now() WHERE kid = $1",
                        states.pop("standby"),
                    )
                else:
                    key = make_key()
                    await self._insert_signing_key(conn, key, "current")
                    created.append(key.kid)
            if "standby" not in states:
                key = make_key()
                await self._insert_signing_key(conn, key, "standby")
                created.append(key.kid)
        return created

    async def rotate_signing_keys(
        self, make_key: Callable[[], NewSigningKey], verify_for_s: float, audit: AuditEvent
    ) -> Rotation:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('goblin-signing-keys'))")
            retired = await conn.fetchval(
                """UPDATE signing_keys
                      SET state = 'retired', retired_at = now(),
                          verify_until = now() + make_interval(secs => $1)
                    WHERE state = 'current' RETURNING kid""",
                float(verify_for_s),
            )
            current = await conn.fetchval(
                """UPDATE signing_keys SET state = 'current', activated_at = now()
                    WHERE state = 'standby' RETURNING kid"""
            )
            if current is None:  # no standby (deleted by hand): a fresh key signs from now on
                key = make_key()
                await self._insert_signing_key(conn, key, "current")
                current = key.kid
            standby = make_key()
            await self._insert_signing_key(conn, standby, "standby")
            # Keys whose every token has expired are of no use to anyone: destroy them.
            await conn.execute("DELETE FROM signing_keys WHERE state = 'retired' AND verify_until <= now()")
            rotation = Rotation(retired_kid=retired, current_kid=current, standby_kid=standby.kid)
            details = {"retired_kid": retired, "current_kid": current, "standby_kid": standby.kid}
            await _audit(conn, replace(audit, details={**audit.details, **details}))
        return rotation

    # -- bootstrap --------------------------------------------------------------------------------
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
                        await _audit(conn, AuditEvent("admin_password_set", tenant_id="default"))
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
            await _audit(conn, AuditEvent("admin_bootstrapped", tenant_id="default", details={"api_key_id": key_id}))
            return True
