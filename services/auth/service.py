"""Auth logic: credentials in, principals out; sign-in, sessions, API keys, passkeys, tenants, quotas.

No gRPC here. The store (Postgres), the ephemeral state (Redis) and the key ring are passed in.
Requests carry a :class:`Context` filled by the gateway from a verified credential; anything that
changes an account checks the requester against the database, not only against the context.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cachetools import TTLCache

from services.auth import passkeys
from services.auth.accounts import (
    API_KEY_PREFIX,
    TENANT_ID_PATTERN,
    Accounts,
    CreatedApiKey,
    has_control_characters,
    hash_api_key,
    new_api_key,
    normalise_email,
    valid_id,
    valid_name,
    valid_quota,
    valid_scopes,
    write_secret_file,
)
from services.auth.config import AuthPolicySettings
from services.auth.keys import KeyRing, Rotation
from services.auth.metrics import AUTHENTICATIONS, KEY_ROTATIONS, SECURITY_EVENTS, SIGN_INS
from services.auth.passwords import LockoutPolicy, Passwords
from services.auth.repository import (
    ApiKeyInfo,
    ApiKeyRecord,
    AuditEvent,
    PasskeyRecord,
    RefreshExchange,
    SessionRecord,
    TenantRecord,
    UserRecord,
)
from services.auth.tokens import (
    REFRESH_TOKEN_PREFIX,
    TokenCodec,
    hash_refresh_token,
    looks_like_jwt,
    new_refresh_token,
)
from services.common.context import hash_user_id
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

log = logging.getLogger(__name__)

# Writing last_used_at on every request would turn each read into a write; once a minute is enough.
LAST_USED_RESOLUTION_S = 60.0
# A tenant's quota is read at most this often per replica; a change applies within this time.
TENANT_CACHE_S = 30.0
SESSION_SCOPES = ["*"]  # a signed-in person may do whatever their role allows
_UNKNOWN = object()


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str] = field(default_factory=list)
    api_key_id: str = ""
    session_id: str = ""
    expires_at: int = 0
    requests_per_day: int = 0
    # The budgets the router enforces, forwarded with the principal (None: unlimited).
    tenant_daily_budget_usd: float | None = None
    key_tokens_per_day: int | None = None


@dataclass(frozen=True)
class Context:
    """Who is asking, as the gateway verified it (RequestContext as a domain object)."""

    correlation_id: str = ""
    user_id: str = ""
    tenant_id: str = ""
    api_key_id: str = ""
    scopes: tuple[str, ...] = ()
    client_ip: str = ""

    def has_scope(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user: UserRecord


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int
    resets_at: int


@dataclass(frozen=True)
class PasskeyChallenge:
    options_json: str
    challenge_id: str


@dataclass(frozen=True)
class Jwks:
    keys: dict[str, Any]
    current_kid: str
    standby_kid: str


@dataclass(frozen=True)
class AuthPolicy:
    access_token_ttl_s: int = 900
    jwt_leeway_s: int = 30
    session_ttl_s: int = 7 * 86400
    admin_session_ttl_s: int = 3600
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    self_registration: bool = False
    self_registration_tenant: str = "default"
    webauthn: passkeys.WebAuthnConfig = field(
        default_factory=lambda: passkeys.WebAuthnConfig("localhost", "Goblin", ["https://localhost:8443"])
    )

    @classmethod
    def from_settings(cls, settings: AuthPolicySettings) -> AuthPolicy:
        return cls(
            access_token_ttl_s=settings.access_token_ttl_s,
            jwt_leeway_s=settings.jwt_leeway_s,
            session_ttl_s=settings.session_ttl_s,
            admin_session_ttl_s=settings.admin_session_ttl_s,
            lockout=LockoutPolicy(
                max_failures=settings.login_max_failures,
                base_s=settings.login_lockout_base_s,
                max_s=settings.login_lockout_max_s,
                window_s=settings.login_failure_window_s,
            ),
            self_registration=settings.self_registration,
            self_registration_tenant=settings.self_registration_tenant,
            webauthn=passkeys.WebAuthnConfig(
                rp_id=settings.webauthn_rp_id,
                rp_name=settings.webauthn_rp_name,
                origins=settings.webauthn_origin_list,
                require_user_verification=settings.webauthn_require_user_verification,
            ),
        )


class AuthStore(Protocol):
    """What the service needs from Postgres (:class:`~services.auth.repository.AuthRepository`)."""

    async def audit(self, event: AuditEvent) -> None: ...
    async def get_user(self, user_id: str) -> UserRecord | None: ...
    async def find_user_by_email(self, email: str) -> UserRecord | None: ...
    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...
    async def record_login_failure(self, user_id: str, window_s: float) -> int: ...
    async def lock_user(self, user_id: str, until: datetime) -> None: ...
    async def clear_login_failures(self, user_id: str) -> None: ...
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...
    async def list_tenants(self) -> list[TenantRecord]: ...
    async def update_tenant(
        self, tenant_id: str, changes: dict[str, Any], audit: AuditEvent | None = None
    ) -> TenantRecord | None: ...
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def touch_api_key(self, key_id: str) -> None: ...
    async def get_api_key(self, key_id: str) -> ApiKeyInfo | None: ...
    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]: ...
    async def revoke_api_key(self, key_id: str, audit: AuditEvent | None = None) -> bool: ...
    async def create_session(self, **fields: Any) -> None: ...
    async def exchange_refresh_token(self, old_hash: str, new_id: str, new_hash: str) -> RefreshExchange: ...
    async def find_session(self, refresh_hash: str) -> SessionRecord | None: ...
    async def revoke_session_family(
        self, family: str, user_id: str, audit: AuditEvent | None = None
    ) -> datetime | None: ...
    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]: ...
    async def find_passkey(self, credential_id: bytes) -> PasskeyRecord | None: ...
    async def add_passkey(self, **fields: Any) -> PasskeyRecord: ...
    async def record_passkey_use(self, passkey_id: str, seen_count: int, new_count: int, backed_up: bool) -> bool: ...
    async def delete_passkey(self, passkey_id: str, user_id: str, audit: AuditEvent | None = None) -> bool: ...
    async def bootstrap_admin(self, **fields: Any) -> bool: ...


class Ephemeral(Protocol):
    """Short-lived state shared by every replica (:class:`~services.auth.ephemeral.RedisEphemeral`)."""

    async def put_challenge(self, challenge_id: str, value: dict[str, str], ttl_s: int) -> None: ...
    async def take_challenge(self, challenge_id: str) -> dict[str, str] | None: ...
    async def revoke_session(self, session_id: str, ttl_s: int) -> None: ...
    async def session_revoked(self, session_id: str) -> bool: ...
    async def count_request(self, tenant_id: str, day: str, expire_at: int) -> int: ...
    async def unknown_email_failures(self, email_hash: str) -> tuple[int, float]: ...
    async def record_unknown_email_failure(self, email_hash: str, window_s: float) -> int: ...
    async def lock_unknown_email(self, email_hash: str, until: float) -> None: ...


def credential_kind(credential: str) -> str:
    if credential.startswith(API_KEY_PREFIX):
        return "api_key"
    return "access_token" if looks_like_jwt(credential) else "other"


def has_scope(scopes: Any, scope: str) -> bool:
    """``"*"`` grants every scope."""
    return "*" in scopes or scope in scopes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _hash(kind: str, value: str) -> str:
    """A one-way, salted-by-kind digest for the audit trail (emails, IPs): never the value itself."""
    return hashlib.sha256(f"goblin-{kind}:{value}".encode()).hexdigest()[:16] if value else ""


def _next_utc_midnight(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=1)).timestamp())


class AuthService:
    def __init__(
        self,
        store: AuthStore,
        ephemeral: Ephemeral,
        keyring: KeyRing,
        *,
        passwords: Passwords,
        accounts: Accounts,
        tokens: TokenCodec,
        policy: AuthPolicy,
    ) -> None:
        self.store = store
        self.ephemeral = ephemeral
        self.keyring = keyring
        self.passwords = passwords
        self.accounts = accounts
        self.tokens = tokens
        self.policy = policy
        self._recently_touched: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=LAST_USED_RESOLUTION_S)
        self._tenants: TTLCache[str, TenantRecord | None] = TTLCache(maxsize=4096, ttl=TENANT_CACHE_S)

    # -- credentials ------------------------------------------------------------------------------
    async def authenticate(self, credential: str) -> Principal:
        """The principal behind a bearer credential (API key or access token), or :class:`Unauthenticated`."""
        credential = credential.strip()
        kind = credential_kind(credential)
        try:
            if kind == "api_key":
                principal = await self._authenticate_api_key(credential)
            elif kind == "access_token":
                principal = await self._authenticate_access_token(credential)
            else:
                raise Unauthenticated("invalid credential" if credential else "missing credential")
        except Unauthenticated:
            AUTHENTICATIONS.labels(kind, "refused").inc()
            raise
        AUTHENTICATIONS.labels(kind, "accepted").inc()
        return principal

    async def _authenticate_api_key(self, credential: str) -> Principal:
        record = await self.store.find_api_key(hash_api_key(credential))
        if record is None or record.revoked_at is not None or not record.user_active:
            raise Unauthenticated("invalid credential")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise Unauthenticated("credential expired", code="token_expired")
        await self._touch(record.id)
        return Principal(
            user_id=record.user_id,
            tenant_id=record.tenant_id,
            email=record.email,
            role=record.role,
            scopes=list(record.scopes),
            api_key_id=record.id,
            expires_at=int(record.expires_at.timestamp()) if record.expires_at else 0,
            requests_per_day=await self._requests_per_day(record.tenant_id),
            tenant_daily_budget_usd=record.tenant_daily_budget_usd,
            key_tokens_per_day=record.tokens_per_day,
        )

    async def _authenticate_access_token(self, token: str) -> Principal:
        claims = await self.tokens.verify(token)
        if await self.ephemeral.session_revoked(claims.session_id):
            raise Unauthenticated("this session has ended; sign in again", code="session_revoked")
        return Principal(
            user_id=claims.user_id,
            tenant_id=claims.tenant_id,
            email=claims.email,
            role=claims.role,
            scopes=claims.scopes,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
            requests_per_day=await self._requests_per_day(claims.tenant_id),
            tenant_daily_budget_usd=await self._daily_budget_usd(claims.tenant_id),
        )

    async def _touch(self, key_id: str) -> None:
        if self._recently_touched.get(key_id) is None:
            self._recently_touched[key_id] = True
            await self.store.touch_api_key(key_id)

    async def _tenant(self, tenant_id: str) -> TenantRecord | None:
        cached = self._tenants.get(tenant_id, _UNKNOWN)
        if cached is not _UNKNOWN:
            return cached  # type: ignore[return-value]
        tenant = await self.store.get_tenant(tenant_id)
        self._tenants[tenant_id] = tenant
        return tenant

    async def _requests_per_day(self, tenant_id: str) -> int:
        tenant = await self._tenant(tenant_id)
        return (tenant.requests_per_day or 0) if tenant else 0

    async def _daily_budget_usd(self, tenant_id: str) -> float | None:
        tenant = await self._tenant(tenant_id)
        return tenant.daily_budget_usd if tenant else None

    # -- who is asking ----------------------------------------------------------------------------
    async def _caller(self, ctx: Context) -> UserRecord:
        if not ctx.user_id:
            raise Unauthenticated("sign in first")
        if not valid_id(ctx.user_id):
            raise Unauthenticated("this account is disabled or gone")
        user = await self.store.get_user(ctx.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("this account is disabled or gone")
        return user

    @staticmethod
    def _is_admin(user: UserRecord, ctx: Context) -> bool:
        return user.role == "admin" and ctx.has_scope("admin")

    async def _admin(self, ctx: Context) -> UserRecord:
        user = await self._caller(ctx)
        if not self._is_admin(user, ctx):
            raise PermissionDenied("admin only (role admin with the 'admin' scope)")
        return user

    async def _caller_with_scope(self, ctx: Context, scope: str) -> UserRecord:
        user = await self._caller(ctx)
        if not ctx.has_scope(scope):
            raise PermissionDenied(f"this credential lacks the {scope!r} scope", code="insufficient_scope")
        return user

    def _event(
        self, event_type: str, ctx: Context, *, tenant_id: str = "", user_id: str = "", **details: Any
    ) -> AuditEvent:
        return AuditEvent(
            event_type,
            tenant_id=tenant_id or ctx.tenant_id,
            user_hash=hash_user_id(user_id),
            correlation_id=ctx.correlation_id,
            details=details,
        )

    # -- accounts ---------------------------------------------------------------------------------
    async def register(self, ctx: Context, *, email: str, password: str, tenant_id: str, role: str) -> UserRecord:
        """A new account with a password: by an admin (any tenant and role), or by anyone when
        self-registration is on (a user in the configured tenant)."""
        role = role or "user"
        if ctx.user_id:
            caller = await self._caller(ctx)
            if not self._is_admin(caller, ctx):
                raise PermissionDenied("only an admin creates accounts for others")
            if tenant_id and not TENANT_ID_PATTERN.match(tenant_id):
                raise NotFound(f"no tenant {tenant_id[:70]!r}", code="tenant_not_found")
            tenant, by = tenant_id or caller.tenant_id, hash_user_id(caller.id)
        else:
            if not self.policy.self_registration:
                raise PermissionDenied("registration is closed: an admin creates accounts", code="registration_closed")
            if role != "user" or tenant_id not in ("", self.policy.self_registration_tenant):
                raise PermissionDenied("self-registration makes user accounts in the default tenant only")
            tenant, by = self.policy.self_registration_tenant, "self"
        return await self.accounts.create_user(
            email=email,
            password=password,
            role=role,
            tenant_id=tenant,
            by=by,
            correlation_id=ctx.correlation_id,
        )

    async def get_user(self, ctx: Context, user_id: str) -> UserRecord:
        caller = await self._caller(ctx)
        if user_id in ("", caller.id):
            return caller
        if not self._is_admin(caller, ctx) or not valid_id(user_id):
            raise NotFound("no such user")
        user = await self.store.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

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
        email_hash = _hash("email", email)
        plausible = email and not has_control_characters(email)
        user = await self.store.find_user_by_email(email) if plausible else None
        now = datetime.now(UTC)
        if user is not None:
            locked_until = user.locked_until
        else:
            _, until = await self.ephemeral.unknown_email_failures(email_hash)
            locked_until = datetime.fromtimestamp(until, UTC) if until else None
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
            await self._login_failed(ctx, user, email_hash, reason, now)
            raise Unauthenticated("wrong email or password", code="invalid_credentials")
        if user.failed_logins or user.locked_until:
            await self.store.clear_login_failures(user.id)
        if user.password_hash and self.passwords.needs_rehash(user.password_hash):
            await self.store.set_password_hash(user.id, await self.passwords.hash(password))
        return await self._open_session(ctx, user, method="password")

    async def _login_failed(
        self, ctx: Context, user: UserRecord | None, email_hash: str, reason: str, now: datetime
    ) -> None:
        lockout = self.policy.lockout
        if user is not None:
            failures = await self.store.record_login_failure(user.id, lockout.window_s)
        else:
            failures = await self.ephemeral.record_unknown_email_failure(email_hash, lockout.window_s)
        locked_until = lockout.locked_until(failures, now)
        if locked_until is not None:
            SECURITY_EVENTS.labels("account_locked").inc()
            if user is not None:
                await self.store.lock_user(user.id, locked_until)
            else:
                await self.ephemeral.lock_unknown_email(email_hash, locked_until.timestamp())
        details: dict[str, Any] = {"method": "password", "reason": reason, "failures": failures}
        if locked_until is not None:
            details["locked_for_s"] = lockout.lock_for(failures)
        if user is None:
            details["email_hash"] = email_hash
        await self.store.audit(
            self._event(
                "login_failed",
                ctx,
                tenant_id=user.tenant_id if user else "",
                user_id=user.id if user else "",
                **details,
            )
        )

    async def _open_session(self, ctx: Context, user: UserRecord, *, method: str) -> TokenPair:
        """A new sign-in: a refresh-token family (user sessions 7 days, admin 1 hour by default) and
        its first access token."""
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
            ip_hash=_hash("ip", ctx.client_ip) or None,
            expires_at=expires_at,
            audit=self._event(
                "login_succeeded",
                ctx,
                tenant_id=user.tenant_id,
                user_id=user.id,
                method=method,
                session_id=family,
            ),
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=max(0, access_expires - issued),
            refresh_expires_in=ttl,
            user=user,
        )

    # -- refresh and sign-out ---------------------------------------------------------------------
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
            await self.ephemeral.revoke_session(session.refresh_family, self._access_lifetime_s())
        if exchange.outcome == "reused" and session is not None:
            SECURITY_EVENTS.labels("refresh_token_reused").inc()
            log.warning(
                "refresh token reused: session revoked",
                extra={"user_hash": hash_user_id(session.user_id), "session_id": session.refresh_family},
            )
            await self.store.audit(
                self._event(
                    "refresh_token_reused",
                    ctx,
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

    def _access_lifetime_s(self) -> int:
        return self.policy.access_token_ttl_s + self.policy.jwt_leeway_s

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
            family, owner, audit=self._event("logout", ctx, user_id=owner, session_id=family)
        )
        await self.ephemeral.revoke_session(family, self._access_lifetime_s())
        return expires_at is not None

    # -- API keys ---------------------------------------------------------------------------------
    async def create_api_key(
        self,
        ctx: Context,
        *,
        name: str,
        scopes: list[str],
        expires_at: int,
        user_id: str,
        tokens_per_day: int,
    ) -> CreatedApiKey:
        caller = await self._caller_with_scope(ctx, "keys")
        owner = caller
        if user_id and user_id != caller.id:
            if not self._is_admin(caller, ctx):
                raise PermissionDenied("only an admin creates keys for other users")
            found = await self.store.get_user(user_id) if valid_id(user_id) else None
            if found is None:
                raise NotFound("no such user")
            if not found.is_active:
                raise FailedPrecondition("that account is disabled")
            owner = found
        granted = valid_scopes(scopes or ["chat"])
        if not ctx.has_scope("*"):
            beyond = [s for s in granted if s not in ctx.scopes]
            if beyond:
                raise PermissionDenied(f"a key cannot have scopes its creator lacks: {', '.join(beyond)}")
        try:
            expiry = datetime.fromtimestamp(expires_at, UTC) if expires_at else None
        except (ValueError, OverflowError, OSError):
            raise InvalidArgument("expires_at: not a time we can represent") from None
        return await self.accounts.issue_api_key(
            user=owner,
            name=name,
            scopes=granted,
            expires_at=expiry,
            tokens_per_day=tokens_per_day,
            by=hash_user_id(caller.id),
            correlation_id=ctx.correlation_id,
        )

    async def list_api_keys(self, ctx: Context) -> list[ApiKeyInfo]:
        caller = await self._caller_with_scope(ctx, "keys")
        return await self.store.list_api_keys(caller.id)

    async def revoke_api_key(self, ctx: Context, key_id: str) -> bool:
        caller = await self._caller_with_scope(ctx, "keys")
        key = await self.store.get_api_key(key_id) if valid_id(key_id) else None
        if key is None or (key.user_id != caller.id and not self._is_admin(caller, ctx)):
            raise NotFound("no such API key")
        await self.store.revoke_api_key(
            key_id,
            audit=self._event(
                "api_key_revoked",
                ctx,
                tenant_id=key.tenant_id,
                user_id=key.user_id,
                api_key_id=key_id,
                by=hash_user_id(caller.id),
            ),
        )
        return True

    # -- passkeys ---------------------------------------------------------------------------------
    async def _put_challenge(self, ceremony: str, challenge: bytes, user_id: str) -> str:
        challenge_id = secrets.token_urlsafe(24)
        await self.ephemeral.put_challenge(
            challenge_id,
            {"ceremony": ceremony, "challenge": _b64(challenge), "user_id": user_id},
            passkeys.CHALLENGE_TTL_S,
        )
        return challenge_id

    async def _take_challenge(self, ceremony: str, challenge_id: str) -> tuple[bytes, str] | None:
        stored = await self.ephemeral.take_challenge(challenge_id) if challenge_id else None
        if stored is None or stored.get("ceremony") != ceremony:
            return None
        return base64.urlsafe_b64decode(stored["challenge"]), stored.get("user_id", "")

    async def passkey_registration_options(self, ctx: Context) -> PasskeyChallenge:
        user = await self._caller_with_scope(ctx, "keys")
        existing = await self.store.list_passkeys(user.id)
        options_json, challenge = passkeys.registration_options(
            self.policy.webauthn,
            user_handle=user.id.encode(),
            user_name=user.email,
            existing=[passkeys.KnownCredential(p.credential_id, list(p.transports)) for p in existing],
        )
        return PasskeyChallenge(options_json, await self._put_challenge("register", challenge, user.id))

    async def passkey_registration_verify(
        self, ctx: Context, *, challenge_id: str, credential_json: str, name: str
    ) -> PasskeyRecord:
        user = await self._caller_with_scope(ctx, "keys")
        taken = await self._take_challenge("register", challenge_id)
        if taken is None or taken[1] != user.id:
            raise InvalidArgument("unknown, expired or already used challenge", code="challenge_invalid")
        registered = passkeys.verify_registration(self.policy.webauthn, credential_json, taken[0])
        passkey_id = uuid.uuid4().hex
        return await self.store.add_passkey(
            passkey_id=passkey_id,
            user_id=user.id,
            credential_id=registered.credential_id,
            public_key=registered.public_key,
            sign_count=registered.sign_count,
            transports=registered.transports,
            name=valid_name(name or "passkey"),
            backed_up=registered.backed_up,
            audit=self._event(
                "passkey_registered",
                ctx,
                tenant_id=user.tenant_id,
                user_id=user.id,
                passkey_id=passkey_id,
                backed_up=registered.backed_up,
            ),
        )

    async def passkey_login_options(self, ctx: Context, *, email: str) -> PasskeyChallenge:
        """Options for signing in. With an email, the account's passkeys are offered; without (or for
        an unknown email), the browser offers any discoverable passkey it holds for this site."""
        allowed: list[passkeys.KnownCredential] = []
        user_id = ""
        if email.strip() and not has_control_characters(email):
            user = await self.store.find_user_by_email(normalise_email(email))
            if user is not None and user.is_active:
                user_id = user.id
                allowed = [
                    passkeys.KnownCredential(p.credential_id, list(p.transports))
                    for p in await self.store.list_passkeys(user.id)
                ]
        options_json, challenge = passkeys.authentication_options(self.policy.webauthn, allowed=allowed)
        return PasskeyChallenge(options_json, await self._put_challenge("login", challenge, user_id))

    async def passkey_login_verify(self, ctx: Context, *, challenge_id: str, credential_json: str) -> TokenPair:
        try:
            pair = await self._passkey_login(ctx, challenge_id, credential_json)
        except (Unauthenticated, InvalidArgument):
            SIGN_INS.labels("passkey", "failure").inc()
            raise
        SIGN_INS.labels("passkey", "success").inc()
        return pair

    async def _passkey_login(self, ctx: Context, challenge_id: str, credential_json: str) -> TokenPair:
        taken = await self._take_challenge("login", challenge_id)
        if taken is None:
            raise Unauthenticated("unknown, expired or already used challenge", code="challenge_invalid")
        challenge, expected_user = taken
        assertion = passkeys.parse_assertion(credential_json)
        passkey = await self.store.find_passkey(assertion.credential_id)
        if passkey is None:
            await self.store.audit(self._event("login_failed", ctx, method="passkey", reason="unknown_passkey"))
            raise Unauthenticated("unknown passkey", code="passkey_invalid")
        if (expected_user and expected_user != passkey.user_id) or (
            assertion.user_handle is not None and assertion.user_handle != passkey.user_id.encode()
        ):
            await self._passkey_failed(ctx, passkey, "wrong_account")
            raise Unauthenticated("this passkey belongs to another account", code="passkey_invalid")
        try:
            verified = passkeys.verify_assertion(self.policy.webauthn, credential_json, challenge, passkey.public_key)
        except Unauthenticated as exc:
            await self._passkey_failed(ctx, passkey, "verification_failed", error=exc.message[:200])
            raise
        if passkeys.sign_count_regressed(passkey.sign_count, verified.sign_count):
            SECURITY_EVENTS.labels("passkey_clone_suspected").inc()
            log.warning(
                "passkey sign count went backwards: possible cloned authenticator",
                extra={"user_hash": hash_user_id(passkey.user_id), "passkey_id": passkey.id},
            )
            await self._passkey_failed(
                ctx, passkey, "sign_count_regressed", stored=passkey.sign_count, presented=verified.sign_count
            )
            raise Unauthenticated(
                "passkey refused: its signature counter went backwards (a cloned authenticator?)",
                code="passkey_cloned",
            )
        if not await self.store.record_passkey_use(
            passkey.id, passkey.sign_count, verified.sign_count, verified.backed_up
        ):
            raise Unauthenticated(
                "this passkey was used at the same moment elsewhere; try again", code="passkey_invalid"
            )
        user = await self.store.get_user(passkey.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("this account is disabled or gone")
        return await self._open_session(ctx, user, method="passkey")

    async def _passkey_failed(self, ctx: Context, passkey: PasskeyRecord, reason: str, **details: Any) -> None:
        event = "passkey_clone_suspected" if reason == "sign_count_regressed" else "login_failed"
        await self.store.audit(
            self._event(
                event,
                ctx,
                user_id=passkey.user_id,
                method="passkey",
                reason=reason,
                passkey_id=passkey.id,
                **details,
            )
        )

    async def list_passkeys(self, ctx: Context) -> list[PasskeyRecord]:
        user = await self._caller_with_scope(ctx, "keys")
        return await self.store.list_passkeys(user.id)

    async def delete_passkey(self, ctx: Context, passkey_id: str) -> bool:
        user = await self._caller_with_scope(ctx, "keys")
        if not valid_id(passkey_id):
            raise NotFound("no such passkey")
        deleted = await self.store.delete_passkey(
            passkey_id,
            user.id,
            audit=self._event("passkey_deleted", ctx, tenant_id=user.tenant_id, user_id=user.id, passkey_id=passkey_id),
        )
        if not deleted:
            raise NotFound("no such passkey")
        return True

    # -- signing keys -----------------------------------------------------------------------------
    async def jwks(self) -> Jwks:
        keys, current, standby = await self.keyring.jwks()
        return Jwks(keys, current, standby)

    async def rotate_signing_keys(self, ctx: Context) -> Jwks:
        admin = await self._admin(ctx)
        rotation: Rotation = await self.keyring.rotate(
            self._event("signing_keys_rotated", ctx, tenant_id=admin.tenant_id, user_id=admin.id, by="api")
        )
        KEY_ROTATIONS.inc()
        log.info(
            "signing keys rotated",
            extra={"current_kid": rotation.current_kid, "standby_kid": rotation.standby_kid},
        )
        return await self.jwks()

    # -- tenants and quotas -----------------------------------------------------------------------
    async def create_tenant(
        self,
        ctx: Context,
        *,
        tenant_id: str,
        name: str,
        requests_per_day: int,
        tokens_per_day: int,
        daily_budget_usd: float,
    ) -> TenantRecord:
        admin = await self._admin(ctx)
        return await self.accounts.create_tenant(
            tenant_id=tenant_id,
            name=name,
            requests_per_day=requests_per_day,
            tokens_per_day=tokens_per_day,
            daily_budget_usd=daily_budget_usd,
            by=hash_user_id(admin.id),
            correlation_id=ctx.correlation_id,
        )

    async def update_tenant(self, ctx: Context, tenant_id: str, changes: dict[str, Any]) -> TenantRecord:
        admin = await self._admin(ctx)
        if not TENANT_ID_PATTERN.match(tenant_id):
            raise NotFound("no such tenant")
        cleaned: dict[str, Any] = {}
        for column, value in changes.items():
            cleaned[column] = valid_name(value) if column == "name" else valid_quota(value, column)
        tenant = await self.store.update_tenant(
            tenant_id,
            cleaned,
            audit=self._event("tenant_updated", ctx, tenant_id=tenant_id, by=hash_user_id(admin.id), **cleaned),
        )
        if tenant is None:
            raise NotFound("no such tenant")
        self._tenants.pop(tenant_id, None)
        return tenant

    async def list_tenants(self, ctx: Context) -> list[TenantRecord]:
        await self._admin(ctx)
        return await self.store.list_tenants()

    async def charge_request(self, ctx: Context) -> QuotaStatus:
        """Count one request against the tenant's requests/day quota (per UTC day, shared by every
        replica). Past the quota: :class:`ResourceExhausted` with the seconds until midnight UTC."""
        if not ctx.tenant_id:
            raise InvalidArgument("context.tenant_id: required")
        now = time.time()
        resets_at = _next_utc_midnight(now)
        limit = await self._requests_per_day(ctx.tenant_id)
        if not limit:
            return QuotaStatus(used=0, limit=0, resets_at=resets_at)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        used = await self.ephemeral.count_request(ctx.tenant_id, day, resets_at + 3600)
        if used > limit:
            if used == limit + 1:  # once per tenant and day
                SECURITY_EVENTS.labels("quota_exhausted").inc()
                await self.store.audit(
                    self._event("quota_exhausted", ctx, user_id=ctx.user_id, quota="requests_per_day", limit=limit)
                )
            raise ResourceExhausted(
                f"your tenant's quota of {limit} requests per day is used up; it resets at 00:00 UTC",
                code="quota_exceeded",
                retry_after=resets_at - now,
            )
        return QuotaStatus(used=used, limit=limit, resets_at=resets_at)

    # -- bootstrap --------------------------------------------------------------------------------
    async def bootstrap_admin(self, email: str, password: str | None, key_file: Path) -> bool:
        """First start: create the admin and write its API key to ``key_file`` (mode 0600)."""
        key = new_api_key()
        created = await self.store.bootstrap_admin(
            user_id=str(uuid.uuid4()),
            email=normalise_email(email),
            password_hash=await self.passwords.hash(password) if password else None,
            key_id=key.id,
            key_prefix=key.prefix,
            key_hash=key.hash,
        )
        if created:
            write_secret_file(key_file, key.secret + "\n")
            log.info("bootstrap admin created", extra={"admin_key_file": str(key_file), "api_key_id": key.id})
        return created
