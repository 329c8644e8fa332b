"""Sessions: password sign-in with its lockout (per email and client address, with a higher ceiling per
email), and the refresh-token families a sign-in opens.

A session is one sign-in. Its refresh tokens rotate on every use and never outlive it; its access
tokens carry its id (``sid``), so ending the session (sign-out, a reused refresh token) refuses them
through Redis until they would have expired anyway.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.auth.accounts import has_control_characters, normalise_email
from services.auth.context import Context
from services.auth.metrics import SECURITY_EVENTS, SIGN_INS
from services.auth.policy import AuthPolicy
from services.auth.repository import AuditEvent, RefreshExchange, SessionRecord, UserRecord
from services.auth.tokens import REFRESH_TOKEN_PREFIX, hash_refresh_token, new_refresh_token
from services.common.context import hash_user_id
from services.common.errors import InvalidArgument, ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

SESSION_SCOPES = ["*"]  # a signed-in person may do whatever their role allows
# Failures lock the (email, client address) they come from after GOBLIN_LOGIN_MAX_FAILURES; the email
# itself, for every address, only after this many times as many. So a stranger cannot keep a known user
# out from elsewhere with a few wrong passwords, and a guesser spreading over many addresses still stops.
GLOBAL_LOCKOUT_FACTOR = 10


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user: UserRecord


class SessionStore(Protocol):
    async def audit(self, event: AuditEvent) -> None: ...
    async def find_user_by_email(self, email: str) -> UserRecord | None: ...
    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...
    async def record_login_failure(self, user_id: str, window_s: float) -> int: ...
    async def lock_user(self, user_id: str, until: datetime) -> None: ...
    async def clear_login_failures(self, user_id: str) -> None: ...
    async def create_session(self, **fields: Any) -> None: ...
    async def exchange_refresh_token(self, old_hash: str, new_id: str, new_hash: str) -> RefreshExchange: ...
    async def find_session(self, refresh_hash: str) -> SessionRecord | None: ...
    async def revoke_session_family(
        self, family: str, user_id: str, audit: AuditEvent | None = None
    ) -> datetime | None: ...


class SessionState(Protocol):
    """What sessions keep in Redis: revoked sessions, and sign-in failures per subject (an (email,
    client address) pair, or an email that has no account)."""

    async def revoke_session(self, session_id: str, ttl_s: int) -> None: ...
    async def failures_of(self, subject: str) -> tuple[int, float]: ...
    async def record_failure(self, subject: str, window_s: float) -> int: ...
    async def lock_subject(self, subject: str, until: float) -> None: ...
    async def forget_failures(self, subject: str) -> None: ...


class AccessTokenIssuer(Protocol):
    async def issue(
        self,
        *,
        user_id: str,
        tenant_id: str,
        email: str,
        role: str,
        scopes: list[str],
        session_id: str,
        session_expires_at: int,
        now: int | None = None,
    ) -> tuple[str, int]: ...


class PasswordCheck(Protocol):
    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str | None, password: str) -> bool: ...
    def needs_rehash(self, password_hash: str) -> bool: ...


def audit_digest(kind: str, value: str) -> str:
    """A one-way, salted-by-kind digest for the audit trail (emails, IPs): never the value itself."""
    return hashlib.sha256(f"goblin-{kind}:{value}".encode()).hexdigest()[:16] if value else ""


class Sessions:
    def __init__(
        self,
        store: SessionStore,
        state: SessionState,
        *,
        tokens: AccessTokenIssuer,
        passwords: PasswordCheck,
        policy: AuthPolicy,
    ) -> None:
        self.store = store
        self.state = state
        self.tokens = tokens
        self.passwords = passwords
        self.policy = policy
        self.global_lockout = replace(policy.lockout, max_failures=policy.lockout.max_failures * GLOBAL_LOCKOUT_FACTOR)

    # -- password sign-in -------------------------------------------------------------------------
    async def login(self, ctx: Context, *, email: str, password: str) -> TokenPair:
        """Sign in with a password. Unknown emails cost one argon2 verification too, and lock after
        the same number of failures, so neither timing nor lockout tells whether an account exists."""
        try:
            pair = await self._password_login(ctx, email, password)
        except Unauthenticated:
            SIGN_INS.labels("password", "failure").inc()
            raise
        except ResourceExhausted:
            SIGN_INS.labels("password", "locked").inc()
            raise
        SIGN_INS.labels("password", "success").inc()
        return pair

    async def _password_login(self, ctx: Context, email: str, password: str) -> TokenPair:
        email = normalise_email(email)
        email_hash = audit_digest("email", email)
        client = f"{email_hash}:{audit_digest('ip', ctx.client_ip or 'unknown')}"
        plausible = email and not has_control_characters(email)
        user = await self.store.find_user_by_email(email) if plausible else None
        now = datetime.now(UTC)
        if user is not None:
            locked_until = user.locked_until
        else:
            _, until = await self.state.failures_of(email_hash)
            locked_until = datetime.fromtimestamp(until, UTC) if until else None
        _, client_until = await self.state.failures_of(client)
        if client_until and (locked_until is None or client_until > locked_until.timestamp()):
            locked_until = datetime.fromtimestamp(client_until, UTC)
        if locked_until is not None and locked_until > now:
            # Refused before any hashing: hammering a locked account neither extends the lock nor burns CPU.
            raise ResourceExhausted(
                "too many failed sign-ins for this account; try again later",
                code="login_locked",
                retry_after=(locked_until - now).total_seconds(),
            )
        matches = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not matches or not user.is_active:
            reason = "unknown_email" if user is None else "wrong_password" if not matches else "inactive"
            await self._login_failed(ctx, user, email_hash, client, reason, now)
            raise Unauthenticated("wrong email or password", code="invalid_credentials")
        if user.failed_logins or user.locked_until:
            await self.store.clear_login_failures(user.id)
        await self.state.forget_failures(client)
        if user.password_hash and self.passwords.needs_rehash(user.password_hash):
            await self.store.set_password_hash(user.id, await self.passwords.hash(password))
        return await self.open(ctx, user, method="password")

    async def _login_failed(
        self, ctx: Context, user: UserRecord | None, email_hash: str, client: str, reason: str, now: datetime
    ) -> None:
        """Count a failure twice: for the (email, client address), which locks after the policy's
        failures, and for the email from anywhere, which locks only at the global ceiling."""
        lockout = self.policy.lockout
        client_failures = await self.state.record_failure(client, lockout.window_s)
        client_locked = lockout.locked_until(client_failures, now)
        if client_locked is not None:
            await self.state.lock_subject(client, client_locked.timestamp())
        if user is not None:
            failures = await self.store.record_login_failure(user.id, lockout.window_s)
        else:
            failures = await self.state.record_failure(email_hash, lockout.window_s)
        locked_until = self.global_lockout.locked_until(failures, now)
        if locked_until is not None:
            if user is not None:
                await self.store.lock_user(user.id, locked_until)
            else:
                await self.state.lock_subject(email_hash, locked_until.timestamp())
        if client_locked is not None or locked_until is not None:
            SECURITY_EVENTS.labels("account_locked").inc()
        details: dict[str, Any] = {
            "method": "password",
            "reason": reason,
            "failures": failures,
            "client_failures": client_failures,
        }
        if client_locked is not None:
            details["client_locked_for_s"] = lockout.lock_for(client_failures)
        if locked_until is not None:
            details["locked_for_s"] = self.global_lockout.lock_for(failures)
        if user is None:
            details["email_hash"] = email_hash
        await self.store.audit(
            ctx.audit_event(
                "login_failed",
                tenant_id=user.tenant_id if user else "",
                user_id=user.id if user else "",
                **details,
            )
        )

    # -- sessions ---------------------------------------------------------------------------------
    async def open(self, ctx: Context, user: UserRecord, *, method: str) -> TokenPair:
        """A new sign-in of ``user``, who has just proven who they are by ``method``: a refresh-token
        family (user sessions 7 days, admin 1 hour by default) and its first access token."""
        ttl = self.policy.admin_session_ttl_s if user.role == "admin" else self.policy.session_ttl_s
        family = uuid.uuid4().hex
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        issued = int(time.time())
        access_token, access_expires = await self.tokens.issue(
            now=issued,
            user_id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            role=user.role,
            scopes=SESSION_SCOPES,
            session_id=family,
            session_expires_at=int(expires_at.timestamp()),
        )
        refresh_token, refresh_hash = new_refresh_token()
        await self.store.create_session(
            session_id=uuid.uuid4().hex,
            family=family,
            user_id=user.id,
            tenant_id=user.tenant_id,
            refresh_hash=refresh_hash,
            is_admin=user.role == "admin",
            auth_method=method,
            ip_hash=audit_digest("ip", ctx.client_ip) or None,
            expires_at=expires_at,
            audit=ctx.audit_event(
                "login_succeeded", tenant_id=user.tenant_id, user_id=user.id, method=method, session_id=family
            ),
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=max(0, access_expires - issued),
            refresh_expires_in=ttl,
            user=user,
        )

    async def refresh(self, ctx: Context, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair. Each token works once: presenting one that was
        already exchanged means it leaked, so the whole session is revoked."""
        refresh_token = refresh_token.strip()
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            raise Unauthenticated("invalid or expired refresh token", code="invalid_refresh_token")
        new_token, new_hash = new_refresh_token()
        exchange = await self.store.exchange_refresh_token(
            hash_refresh_token(refresh_token), uuid.uuid4().hex, new_hash
        )
        session = exchange.session
        if exchange.outcome in ("reused", "inactive") and session is not None:
            await self.state.revoke_session(session.refresh_family, self.policy.access_token_lifetime_s)
        if exchange.outcome == "reused" and session is not None:
            SECURITY_EVENTS.labels("refresh_token_reused").inc()
            log.warning(
                "refresh token reused: session revoked",
                extra={"user_hash": hash_user_id(session.user_id), "session_id": session.refresh_family},
            )
            await self.store.audit(
                ctx.audit_event(
                    "refresh_token_reused",
                    tenant_id=session.tenant_id,
                    user_id=session.user_id,
                    session_id=session.refresh_family,
                )
            )
            raise Unauthenticated(
                "this refresh token was already used; the session is revoked, sign in again",
                code="refresh_token_reused",
            )
        if exchange.outcome != "rotated" or session is None or exchange.user is None:
            raise Unauthenticated("invalid or expired refresh token", code="invalid_refresh_token")
        user = exchange.user
        session_expires = int(session.expires_at.timestamp())
        now = int(time.time())
        access_token, access_expires = await self.tokens.issue(
            now=now,
            user_id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            role=user.role,
            scopes=SESSION_SCOPES,
            session_id=session.refresh_family,
            session_expires_at=session_expires,
        )
        return TokenPair(access_token, new_token, max(0, access_expires - now), max(0, session_expires - now), user)

    async def logout(self, ctx: Context, *, refresh_token: str, session_id: str) -> bool:
        """End a session: by its refresh token (possession is enough), or the caller's own session.
        Its refresh tokens stop working at once; its access tokens are refused from now on."""
        if refresh_token.strip():
            session = await self.store.find_session(hash_refresh_token(refresh_token.strip()))
            if session is None:
                return False
            family, owner = session.refresh_family, session.user_id
        elif session_id and ctx.user_id:
            family, owner = session_id, ctx.user_id
        else:
            raise InvalidArgument("send the refresh token, or sign out with the session's access token")
        expires_at = await self.store.revoke_session_family(
            family, owner, audit=ctx.audit_event("logout", user_id=owner, session_id=family)
        )
        await self.state.revoke_session(family, self.policy.access_token_lifetime_s)
        return expires_at is not None
