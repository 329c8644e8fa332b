"""Auth logic: credentials in, principals out. No gRPC here."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher

from services.auth.repository import ApiKeyRecord
from services.common.errors import Unauthenticated

log = logging.getLogger(__name__)

API_KEY_PREFIX = "gk_"
# Writing last_used_at on every request would turn each read into a write; once a minute is enough.
LAST_USED_RESOLUTION_S = 60.0


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


@dataclass(frozen=True)
class NewApiKey:
    id: str
    prefix: str
    secret: str
    hash: str


class AuthStore(Protocol):
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def touch_api_key(self, key_id: str) -> None: ...
    async def bootstrap_admin(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        key_id: str,
        key_prefix: str,
        key_hash: str,
    ) -> bool: ...


def hash_api_key(secret: str) -> str:
    """API keys are 256-bit random strings, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> NewApiKey:
    key_id = uuid.uuid4().hex
    public = key_id[:8]
    secret = f"{API_KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    return NewApiKey(id=key_id, prefix=f"{API_KEY_PREFIX}{public}", secret=secret, hash=hash_api_key(secret))


def normalise_email(email: str) -> str:
    return email.strip().lower()


def write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AuthService:
    def __init__(self, store: AuthStore, *, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self._last_touched: dict[str, float] = {}

    async def authenticate(self, credential: str) -> Principal:
        """The principal behind a bearer credential, or :class:`Unauthenticated`."""
        credential = credential.strip()
        if not credential:
            raise Unauthenticated("missing credential")
        if not credential.startswith(API_KEY_PREFIX):
            raise Unauthenticated("invalid credential")
        record = await self.store.find_api_key(hash_api_key(credential))
        if record is None or record.revoked_at is not None or not record.user_active:
            raise Unauthenticated("invalid credential")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise Unauthenticated("credential expired")
        await self._touch(record.id)
        return Principal(
            user_id=record.user_id,
            tenant_id=record.tenant_id,
            email=record.email,
            role=record.role,
            scopes=list(record.scopes),
            api_key_id=record.id,
            expires_at=int(record.expires_at.timestamp()) if record.expires_at else 0,
        )

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._last_touched.get(key_id, 0.0) >= LAST_USED_RESOLUTION_S:
            self._last_touched[key_id] = now
            await self.store.touch_api_key(key_id)

    async def bootstrap_admin(self, email: str, password: str | None, key_file: Path) -> bool:
        """First start: create the admin and write its API key to ``key_file`` (mode 0600)."""
        key = new_api_key()
        created = await self.store.bootstrap_admin(
            user_id=str(uuid.uuid4()),
            email=normalise_email(email),
            password_hash=self.hasher.hash(password) if password else None,
            key_id=key.id,
            key_prefix=key.prefix,
            key_hash=key.hash,
        )
        if created:
            write_secret_file(key_file, key.secret + "\n")
            log.info("bootstrap admin created", extra={"admin_key_file": str(key_file), "api_key_id": key.id})
        return created
