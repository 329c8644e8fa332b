"""Passwords: argon2id off the event loop, bounded in concurrency; the login backoff policy."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.common.errors import InvalidArgument

MAX_PASSWORD_LENGTH = 1024  # argon2 hashes anything; a megabyte "password" is a CPU attack, not a secret


class Passwords:
    """argon2id hashing in worker threads, at most ``concurrency`` at once (each holds the configured
    memory), and a verify that costs the same whether or not there is a real hash to check."""

    def __init__(self, hasher: PasswordHasher, *, concurrency: int = 0, min_length: int = 8) -> None:
        self.hasher = hasher
        self.min_length = min_length
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 2)
        # Verified against when the account does not exist or has no password, so such a login takes
        # as long as a wrong password for a real account.
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(24))

    def check_policy(self, password: str) -> None:
        if len(password) < self.min_length:
            raise InvalidArgument(f"password: at least {self.min_length} characters", code="weak_password")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidArgument(f"password: at most {MAX_PASSWORD_LENGTH} characters")
        if not password.strip():
            raise InvalidArgument("password: must not be only whitespace", code="weak_password")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; always runs exactly one argon2 verification."""
        target = password_hash or self._dummy_hash
        async with self._slots:
            ok = await asyncio.to_thread(self._verify, target, password[:MAX_PASSWORD_LENGTH])
        return ok and password_hash is not None

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


@dataclass(frozen=True)
class LockoutPolicy:
    """Exponential backoff after repeated failures, bounded: a lock never lasts longer than
    ``max_s``, attempts while locked are refused without counting (so hammering cannot extend it),
    and failures older than ``window_s`` are forgotten. Passkey sign-in is not subject to it."""

    max_failures: int = 5
    base_s: float = 30.0
    max_s: float = 900.0
    window_s: float = 86400.0

    def lock_for(self, failures: int) -> float:
        """Seconds to lock after the ``failures``-th consecutive failure (0: not locked)."""
        if failures < self.max_failures:
            return 0.0
        exponent = min(failures - self.max_failures, 32)
        return min(self.base_s * 2**exponent, self.max_s)

    def locked_until(self, failures: int, now: datetime) -> datetime | None:
        seconds = self.lock_for(failures)
        return now + timedelta(seconds=seconds) if seconds else None
