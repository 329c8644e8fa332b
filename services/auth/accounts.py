"""Accounts: users, tenants and API keys made valid and stored, with their audit events.

Who may do these things is not decided here: the areas (:mod:`~services.auth.users`,
:mod:`~services.auth.api_keys`, :mod:`~services.auth.tenants`) check the requester with
:mod:`~services.auth.permissions` first, and the ``goblin users|keys create`` commands are an operator
at the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from services.auth.passwords import Passwords
from services.auth.repository import ApiKeyInfo, AuditEvent, TenantRecord, UserRecord
from services.common.context import hash_user_id
from services.common.errors import InvalidArgument
from services.common.tls import replace_private

API_KEY_PREFIX = "gk_"
ROLES = ("user", "admin")
# "*" is every scope. Others are words the gateway's routes ask for: chat, keys, admin, ...
SCOPE_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_.:-]{0,63})$")
MAX_SCOPES = 32
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Users are uuid4 strings, keys/passkeys/sessions uuid4 hex: anything else names nothing we made.
ID_PATTERN = re.compile(r"^[0-9a-f-]{1,64}$")
MAX_NAME = 100
MAX_KEY_LIFETIME = timedelta(days=3650)
# The columns' ranges: requests_per_day INTEGER, tokens_per_day BIGINT, daily_budget_usd NUMERIC(12, 4).
MAX_REQUESTS_PER_DAY = 2**31 - 1
MAX_TOKENS_PER_DAY = 2**63 - 1
MAX_DAILY_BUDGET_USD = 99_999_999.0
QUOTA_LIMITS = {
    "requests_per_day": MAX_REQUESTS_PER_DAY,
    "tokens_per_day": MAX_TOKENS_PER_DAY,
    "daily_budget_usd": MAX_DAILY_BUDGET_USD,
}


@dataclass(frozen=True)
class NewApiKey:
    id: str
    prefix: str
    secret: str
    hash: str


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKeyInfo
    secret: str  # shown once, never stored


class AccountStore(Protocol):
    async def create_user(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        role: str,
        tenant_id: str,
        audit: AuditEvent | None = None,
    ) -> UserRecord: ...
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
    ) -> ApiKeyInfo: ...
    async def create_tenant(
        self,
        *,
        tenant_id: str,
        name: str,
        requests_per_day: int | None,
        tokens_per_day: int | None,
        daily_budget_usd: float | None,
        audit: AuditEvent | None = None,
    ) -> TenantRecord: ...


def has_control_characters(value: str) -> bool:
    """NUL and the other C0/C1 controls: never part of an email or a name (and Postgres refuses NUL)."""
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def normalise_email(email: str) -> str:
    """One spelling per mailbox: Unicode NFKC, trimmed, lower case."""
    return unicodedata.normalize("NFKC", email).strip().lower()


def valid_email(email: str) -> str:
    normalised = normalise_email(email)
    if len(normalised) > 254 or has_control_characters(normalised) or not EMAIL_PATTERN.match(normalised):
        raise InvalidArgument("email: not an email address")
    return normalised


def valid_scopes(scopes: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    if not cleaned:
        raise InvalidArgument("scopes: name at least one (e.g. 'chat', or '*' for all)")
    if len(cleaned) > MAX_SCOPES:
        raise InvalidArgument(f"scopes: at most {MAX_SCOPES}")
    for scope in cleaned:
        if not SCOPE_PATTERN.match(scope):
            raise InvalidArgument(f"scopes: {scope[:70]!r} is not a scope name")
    return ["*"] if "*" in cleaned else cleaned


def valid_name(name: str, what: str = "name") -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidArgument(f"{what}: required")
    if has_control_characters(cleaned):
        raise InvalidArgument(f"{what}: no control characters")
    if len(cleaned) > MAX_NAME:
        raise InvalidArgument(f"{what}: at most {MAX_NAME} characters")
    return cleaned


def valid_quota(value: int | float, what: str) -> int | float | None:
    """0 is unlimited (stored as NULL); negative, or more than the column holds, is a mistake."""
    if not 0 <= value <= QUOTA_LIMITS[what]:  # also refuses NaN
        raise InvalidArgument(f"{what}: from 0 (unlimited) to {QUOTA_LIMITS[what]:g}")
    return value or None


def hash_api_key(secret: str) -> str:
    """API keys are 256-bit random strings, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> NewApiKey:
    key_id = uuid.uuid4().hex
    public = key_id[:8]
    secret = f"{API_KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    return NewApiKey(id=key_id, prefix=f"{API_KEY_PREFIX}{public}", secret=secret, hash=hash_api_key(secret))


def write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only, atomically; a symlink planted at the
    path or its temporary name is never written through (services.common.tls.replace_private)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_private(path, content.encode())


class Accounts:
    def __init__(self, store: AccountStore, passwords: Passwords) -> None:
        self.store = store
        self.passwords = passwords

    async def create_user(
        self,
        *,
        email: str,
        password: str | None,
        role: str,
        tenant_id: str,
        by: str,
        correlation_id: str = "",
    ) -> UserRecord:
        """A new account; ``password`` None makes one that signs in with passkeys or API keys only.
        ``by`` names the creator for the audit trail (a hashed user id, "self" or "cli")."""
        email = valid_email(email)
        if role not in ROLES:
            raise InvalidArgument(f"role: one of {', '.join(ROLES)}")
        password_hash = None
        if password is not None:
            self.passwords.check_policy(password)
            password_hash = await self.passwords.hash(password)
        user_id = str(uuid.uuid4())
        return await self.store.create_user(
            user_id=user_id,
            email=email,
            password_hash=password_hash,
            role=role,
            tenant_id=tenant_id,
            audit=AuditEvent(
                "user_created",
                tenant_id=tenant_id,
                user_hash=hash_user_id(user_id),
                correlation_id=correlation_id,
                details={"role": role, "by": by, "password": password is not None},
            ),
        )

    async def issue_api_key(
        self,
        *,
        user: UserRecord,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        tokens_per_day: int,
        by: str,
        correlation_id: str = "",
    ) -> CreatedApiKey:
        """A new API key for ``user``. The secret is in the result and nowhere else."""
        name = valid_name(name)
        scopes = valid_scopes(scopes)
        if expires_at is not None:
            now = datetime.now(UTC)
            if expires_at <= now:
                raise InvalidArgument("expires_at: must be in the future")
            if expires_at > now + MAX_KEY_LIFETIME:
                raise InvalidArgument("expires_at: at most ten years ahead")
        key = new_api_key()
        info = await self.store.create_api_key(
            key_id=key.id,
            user_id=user.id,
            tenant_id=user.tenant_id,
            name=name,
            prefix=key.prefix,
            key_hash=key.hash,
            scopes=scopes,
            expires_at=expires_at,
            tokens_per_day=int(valid_quota(tokens_per_day, "tokens_per_day") or 0) or None,
            audit=AuditEvent(
                "api_key_created",
                tenant_id=user.tenant_id,
                user_hash=hash_user_id(user.id),
                correlation_id=correlation_id,
                details={
                    "api_key_id": key.id,
                    "prefix": key.prefix,
                    "scopes": scopes,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                    "by": by,
                },
            ),
        )
        return CreatedApiKey(key=info, secret=key.secret)

    async def create_tenant(
        self,
        *,
        name: str,
        tenant_id: str = "",
        requests_per_day: int = 0,
        tokens_per_day: int = 0,
        daily_budget_usd: float = 0.0,
        by: str,
        correlation_id: str = "",
    ) -> TenantRecord:
        name = valid_name(name)
        tenant_id = tenant_id.strip() or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
        if not TENANT_ID_PATTERN.match(tenant_id):
            raise InvalidArgument("id: lower-case letters, digits, '-' and '_' (at most 63)")
        quotas = {
            "requests_per_day": valid_quota(requests_per_day, "requests_per_day"),
            "tokens_per_day": valid_quota(tokens_per_day, "tokens_per_day"),
            "daily_budget_usd": valid_quota(daily_budget_usd, "daily_budget_usd"),
        }
        return await self.store.create_tenant(
            tenant_id=tenant_id,
            name=name,
            requests_per_day=quotas["requests_per_day"],
            tokens_per_day=quotas["tokens_per_day"],
            daily_budget_usd=quotas["daily_budget_usd"],
            audit=AuditEvent(
                "tenant_created",
                tenant_id=tenant_id,
                correlation_id=correlation_id,
                details={**quotas, "by": by},
            ),
        )
