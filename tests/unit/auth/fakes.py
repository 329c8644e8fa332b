"""In-memory stand-ins for the auth service's Postgres and Redis, with the semantics the areas rely on
(the real ones are exercised by the integration tests), a builder for a whole AuthService, and a helper
that makes an account and the context of its requests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher

from services.auth.accounts import Accounts
from services.auth.context import Context
from services.auth.keyring import KeyCipher, KeyRing, NewSigningKey, Rotation, SigningKeyRecord
from services.auth.passwords import LockoutPolicy, Passwords
from services.auth.policy import AuthPolicy
from services.auth.repository import (
    ApiKeyInfo,
    ApiKeyRecord,
    AuditEvent,
    AuditEventRow,
    PasskeyRecord,
    RefreshExchange,
    SessionRecord,
    TenantRecord,
    UserRecord,
)
from services.auth.service import AuthService
from services.auth.tokens import TokenCodec
from services.auth.webauthn_ceremonies import WebAuthnConfig
from services.common.errors import AlreadyExists, NotFound

ORIGIN = "https://localhost:8443"
PASSWORD = "correct horse battery"
KEK = bytes(range(32))


def now() -> datetime:
    return datetime.now(UTC)


class FakeStore:
    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.tenants: dict[str, TenantRecord] = {"default": TenantRecord("default", "default", None, None, None, now())}
        self.keys: dict[str, ApiKeyInfo] = {}
        self.key_hashes: dict[str, str] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.refresh_hashes: dict[str, str] = {}
        self.passkeys: dict[str, PasskeyRecord] = {}
        self.signing_keys: dict[str, SigningKeyRecord] = {}
        self.audits: list[AuditEvent] = []
        self.touched: list[str] = []
        self.last_failure: dict[str, datetime] = {}
        self.bootstrap_calls: list[dict[str, Any]] = []

    def events(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.audits if e.event_type == event_type]

    async def audit(self, event: AuditEvent) -> None:
        self.audits.append(event)

    async def recent_audit_events(self, limit: int) -> list[AuditEventRow]:
        rows = [
            AuditEventRow(i + 1, e.event_type, "auth", e.tenant_id, e.correlation_id, now())
            for i, e in enumerate(self.audits)
        ]
        return rows[::-1][:limit]

    def _audit(self, event: AuditEvent | None) -> None:
        if event is not None:
            self.audits.append(event)

    # users
    async def get_user(self, user_id: str) -> UserRecord | None:
        return self.users.get(user_id)

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        return next((u for u in self.users.values() if u.email == email), None)

    async def create_user(self, *, user_id, email, password_hash, role, tenant_id, audit=None) -> UserRecord:
        if await self.find_user_by_email(email):
            raise AlreadyExists("an account with this email exists", code="email_taken")
        if tenant_id not in self.tenants:
            raise NotFound(f"no tenant {tenant_id!r}")
        user = UserRecord(user_id, tenant_id, email, role, password_hash, True, 0, None, now())
        self.users[user_id] = user
        self._audit(audit)
        return user

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self.users[user_id] = replace(self.users[user_id], password_hash=password_hash)

    async def record_login_failure(self, user_id: str, window_s: float) -> int:
        user = self.users[user_id]
        last = self.last_failure.get(user_id)
        failures = 1 if last is None or last < now() - timedelta(seconds=window_s) else user.failed_logins + 1
        self.last_failure[user_id] = now()
        self.users[user_id] = replace(user, failed_logins=failures)
        return failures

    async def lock_user(self, user_id: str, until: datetime) -> None:
        user = self.users[user_id]
        self.users[user_id] = replace(user, locked_until=max(filter(None, [user.locked_until, until])))

    async def clear_login_failures(self, user_id: str) -> None:
        self.users[user_id] = replace(self.users[user_id], failed_logins=0, locked_until=None)
        self.last_failure.pop(user_id, None)

    # tenants
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        return self.tenants.get(tenant_id)

    async def list_tenants(self) -> list[TenantRecord]:
        return list(self.tenants.values())

    async def create_tenant(
        self, *, tenant_id, name, requests_per_day, tokens_per_day, daily_budget_usd, audit=None
    ) -> TenantRecord:
        if tenant_id in self.tenants:
            raise AlreadyExists("a tenant with this id or name exists")
        tenant = TenantRecord(tenant_id, name, requests_per_day, tokens_per_day, daily_budget_usd, now())
        self.tenants[tenant_id] = tenant
        self._audit(audit)
        return tenant

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any], audit=None) -> TenantRecord | None:
        if tenant_id not in self.tenants:
            return None
        self.tenants[tenant_id] = replace(self.tenants[tenant_id], **changes)
        self._audit(audit)
        return self.tenants[tenant_id]

    # API keys
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        key = self.keys.get(self.key_hashes.get(key_hash, ""))
        if key is None:
            return None
        user = self.users[key.user_id]
        return ApiKeyRecord(
            key.id,
            key.user_id,
            key.tenant_id,
            user.email,
            user.role,
            key.scopes,
            key.expires_at,
            key.revoked_at,
            key.last_used_at,
            user.is_active,
        )

    async def touch_api_key(self, key_id: str) -> None:
        self.touched.append(key_id)

    async def create_api_key(
        self,
        *,
        key_id,
        user_id,
        tenant_id,
        name,
        prefix,
        key_hash,
        scopes,
        expires_at,
        tokens_per_day,
        audit=None,
    ) -> ApiKeyInfo:
        info = ApiKeyInfo(
            key_id, user_id, tenant_id, name, prefix, scopes, tokens_per_day, expires_at, None, None, now()
        )
        self.keys[key_id] = info
        self.key_hashes[key_hash] = key_id
        self._audit(audit)
        return info

    async def get_api_key(self, key_id: str) -> ApiKeyInfo | None:
        return self.keys.get(key_id)

    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]:
        return [k for k in self.keys.values() if k.user_id == user_id]

    async def revoke_api_key(self, key_id: str, audit=None) -> bool:
        key = self.keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self.keys[key_id] = replace(key, revoked_at=now())
        self._audit(audit)
        return True

    # sessions
    async def create_session(
        self,
        *,
        session_id,
        family,
        user_id,
        tenant_id,
        refresh_hash,
        is_admin,
        auth_method,
        ip_hash,
        expires_at,
        audit=None,
    ) -> None:
        self.sessions[session_id] = SessionRecord(
            session_id, family, user_id, tenant_id, is_admin, auth_method, expires_at, None, None
        )
        self.refresh_hashes[refresh_hash] = session_id
        self._audit(audit)

    def _revoke_family(self, family: str) -> None:
        for sid, session in self.sessions.items():
            if session.refresh_family == family and session.revoked_at is None:
                self.sessions[sid] = replace(session, revoked_at=now())

    async def exchange_refresh_token(self, old_hash: str, new_id: str, new_hash: str) -> RefreshExchange:
        session = self.sessions.get(self.refresh_hashes.get(old_hash, ""))
        if session is None:
            return RefreshExchange("unknown")
        if session.revoked_at is not None:
            return RefreshExchange("revoked", session)
        if session.rotated_at is not None:
            self._revoke_family(session.refresh_family)
            return RefreshExchange("reused", session)
        if session.expires_at <= now():
            return RefreshExchange("expired", session)
        user = self.users.get(session.user_id)
        if user is None or not user.is_active:
            self._revoke_family(session.refresh_family)
            return RefreshExchange("inactive", session, user)
        self.sessions[session.id] = replace(session, rotated_at=now())
        self.sessions[new_id] = replace(session, id=new_id, rotated_at=None)
        self.refresh_hashes[new_hash] = new_id
        return RefreshExchange("rotated", session, user)

    async def find_session(self, refresh_hash: str) -> SessionRecord | None:
        return self.sessions.get(self.refresh_hashes.get(refresh_hash, ""))

    async def session_ended(self, family: str, user_id: str) -> bool:
        user = self.users.get(user_id)
        return (
            user is None
            or not user.is_active
            or any(s.refresh_family == family and s.revoked_at is not None for s in self.sessions.values())
        )

    async def revoke_session_family(self, family: str, user_id: str, audit=None) -> datetime | None:
        live = [
            s
            for s in self.sessions.values()
            if s.refresh_family == family and s.user_id == user_id and s.revoked_at is None
        ]
        if not live:
            return None
        self._revoke_family(family)
        self._audit(audit)
        return live[0].expires_at

    # passkeys
    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        return [p for p in self.passkeys.values() if p.user_id == user_id]

    async def find_passkey(self, credential_id: bytes) -> PasskeyRecord | None:
        return next((p for p in self.passkeys.values() if p.credential_id == credential_id), None)

    async def add_passkey(
        self,
        *,
        passkey_id,
        user_id,
        credential_id,
        public_key,
        sign_count,
        transports,
        name,
        backed_up,
        audit=None,
    ) -> PasskeyRecord:
        if await self.find_passkey(credential_id):
            raise AlreadyExists("this passkey is already registered")
        record = PasskeyRecord(
            passkey_id,
            user_id,
            credential_id,
            public_key,
            sign_count,
            transports,
            name,
            backed_up,
            None,
            now(),
        )
        self.passkeys[passkey_id] = record
        self._audit(audit)
        return record

    async def record_passkey_use(self, passkey_id: str, seen_count: int, new_count: int, backed_up: bool) -> bool:
        record = self.passkeys[passkey_id]
        if record.sign_count != seen_count:
            return False
        self.passkeys[passkey_id] = replace(record, sign_count=new_count, backed_up=backed_up, last_used_at=now())
        return True

    async def delete_passkey(self, passkey_id: str, user_id: str, audit=None) -> bool:
        record = self.passkeys.get(passkey_id)
        if record is None or record.user_id != user_id:
            return False
        del self.passkeys[passkey_id]
        self._audit(audit)
        return True

    # signing keys
    def _insert(self, key: NewSigningKey, state: str) -> None:
        self.signing_keys[key.kid] = SigningKeyRecord(
            key.kid,
            key.algorithm,
            state,
            key.sealed_private_key,
            key.kek_id,
            key.public_jwk,
            now(),
            None,
            None,
            None,
        )

    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        return [
            k
            for k in self.signing_keys.values()
            if k.state != "retired" or (k.verify_until is not None and k.verify_until > now())
        ]

    async def ensure_signing_keys(self, make_key: Any) -> list[str]:
        states = {k.state: k.kid for k in self.signing_keys.values() if k.state != "retired"}
        created = []
        if "current" not in states:
            key = make_key()
            self._insert(key, "current")
            created.append(key.kid)
        if "standby" not in states:
            key = make_key()
            self._insert(key, "standby")
            created.append(key.kid)
        return created

    async def rotate_signing_keys(self, make_key: Any, verify_for_s: float, audit: AuditEvent) -> Rotation:
        by_state = {k.state: k for k in self.signing_keys.values() if k.state != "retired"}
        retired = by_state["current"].kid
        self.signing_keys[retired] = replace(
            by_state["current"], state="retired", verify_until=now() + timedelta(seconds=verify_for_s)
        )
        current = by_state["standby"].kid
        self.signing_keys[current] = replace(by_state["standby"], state="current")
        standby = make_key()
        self._insert(standby, "standby")
        self.audits.append(audit)
        return Rotation(retired, current, standby.kid)

    async def bootstrap_admin(self, **kwargs: Any) -> bool:
        self.bootstrap_calls.append(kwargs)
        if any(u.role == "admin" for u in self.users.values()):
            return False
        self.users[kwargs["user_id"]] = UserRecord(
            kwargs["user_id"],
            "default",
            kwargs["email"],
            "admin",
            kwargs["password_hash"],
            True,
            0,
            None,
            now(),
        )
        return True


class FakeEphemeral:
    def __init__(self) -> None:
        self.challenges: dict[str, dict[str, str]] = {}
        self.challenge_ttls: dict[str, int] = {}
        self.revoked: set[str] = set()
        self.counters: dict[tuple[str, str], int] = {}
        self.failures: dict[str, tuple[int, float]] = {}

    async def put_challenge(self, challenge_id: str, value: dict[str, str], ttl_s: int) -> None:
        self.challenges[challenge_id] = value
        self.challenge_ttls[challenge_id] = ttl_s

    async def take_challenge(self, challenge_id: str) -> dict[str, str] | None:
        return self.challenges.pop(challenge_id, None)

    async def revoke_session(self, session_id: str, ttl_s: int) -> None:
        self.revoked.add(session_id)

    async def session_revoked(self, session_id: str) -> bool:
        return session_id in self.revoked

    async def count_request(self, tenant_id: str, day: str, expire_at: int) -> int:
        self.counters[(tenant_id, day)] = self.counters.get((tenant_id, day), 0) + 1
        return self.counters[(tenant_id, day)]

    async def failures_of(self, subject: str) -> tuple[int, float]:
        return self.failures.get(subject, (0, 0.0))

    async def record_failure(self, subject: str, window_s: float) -> int:
        failures, until = self.failures.get(subject, (0, 0.0))
        self.failures[subject] = (failures + 1, until)
        return failures + 1

    async def lock_subject(self, subject: str, until: float) -> None:
        failures, _ = self.failures[subject]
        self.failures[subject] = (failures, until)

    async def forget_failures(self, subject: str) -> None:
        self.failures.pop(subject, None)


FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def make_keyring(store: FakeStore, *, algorithm: str = "ES256", kek: bytes = KEK) -> KeyRing:
    return KeyRing(store, KeyCipher(kek), algorithm=algorithm, refresh_s=30, access_token_ttl_s=900, leeway_s=30)


def make_service(
    store: FakeStore | None = None,
    ephemeral: FakeEphemeral | None = None,
    *,
    lockout: LockoutPolicy | None = None,
    self_registration: bool = False,
    algorithm: str = "ES256",
) -> AuthService:
    store = store or FakeStore()
    passwords = Passwords(FAST_HASHER, concurrency=2)
    keyring = make_keyring(store, algorithm=algorithm)
    policy = AuthPolicy(
        lockout=lockout or LockoutPolicy(max_failures=3, base_s=30, max_s=120, window_s=3600),
        self_registration=self_registration,
        webauthn=WebAuthnConfig("localhost", "Goblin", [ORIGIN]),
    )
    return AuthService(
        store,
        ephemeral or FakeEphemeral(),
        keyring,
        passwords=passwords,
        accounts=Accounts(store, passwords),
        tokens=TokenCodec(keyring, issuer="goblin", audience="goblin-api", ttl_s=900, leeway_s=30),
        policy=policy,
    )


async def signed_in(
    service: AuthService,
    email: str,
    *,
    role: str = "user",
    tenant: str = "default",
    password: str | None = None,
    correlation_id: str = "",
) -> Context:
    """A new account (made as an operator would, with no requester) and the context of a request it
    makes with a session: every scope its role allows."""
    user = await service.accounts.create_user(email=email, password=password, role=role, tenant_id=tenant, by="test")
    return Context(user_id=user.id, tenant_id=user.tenant_id, scopes=("*",), correlation_id=correlation_id)


async def admin_context(service: AuthService) -> Context:
    """The admin root@example.com, who signs in with :data:`PASSWORD`."""
    return await signed_in(service, "root@example.com", role="admin", password=PASSWORD)
