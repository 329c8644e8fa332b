"""Short-lived auth state in Redis: passkey challenges, revoked sessions (a cache: Postgres decides),
request quotas, and sign-in failure counts per (email, client address), and of emails that belong to
no account (so those lock exactly like real ones)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from services.common.principal_changes import CHANNEL, encode

PREFIX = "goblin:auth:"


class RedisEphemeral:
    def __init__(self, client: Any) -> None:
        # A callable returning the client, or the client: the store connects after the service is built.
        self._client = client

    @property
    def redis(self) -> aioredis.Redis:
        return self._client() if callable(self._client) else self._client

    async def put_challenge(self, challenge_id: str, value: dict[str, str], ttl_s: int) -> None:
        await self.redis.set(f"{PREFIX}challenge:{challenge_id}", json.dumps(value), ex=ttl_s)

    async def take_challenge(self, challenge_id: str) -> dict[str, str] | None:
        """The challenge, deleted in the same step: a second use finds nothing."""
        raw = await self.redis.getdel(f"{PREFIX}challenge:{challenge_id}")
        return json.loads(raw) if raw else None

    async def revoke_session(self, session_id: str, ttl_s: int) -> None:
        """Access tokens of this session are refused from now until they would have expired anyway,
        and every gateway replica is told to forget the principals it cached for them (a sign-out by
        refresh token alone or a reused refresh token names a session no gateway saw end)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{PREFIX}revoked-session:{session_id}", b"1", ex=max(1, ttl_s))
            pipe.publish(CHANNEL, encode("auth", {"session_id": session_id}))
            await pipe.execute()

    async def session_revoked(self, session_id: str) -> bool:
        return bool(await self.redis.exists(f"{PREFIX}revoked-session:{session_id}"))

    async def count_request(self, tenant_id: str, day: str, expire_at: int) -> int:
        """One more request for ``tenant_id`` on UTC ``day``; the count including it. Atomic across
        every replica; the counter expires after the day is over."""
        key = f"{PREFIX}quota:requests:{tenant_id}:{day}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expireat(key, expire_at)
            used, _ = await pipe.execute()
        return int(used)

    async def failures_of(self, subject: str) -> tuple[int, float]:
        """(failures, locked until as unix seconds) of a sign-in subject: an email with no account, or
        an (email, client address) pair."""
        values = await self.redis.hmget(f"{PREFIX}login-failures:{subject}", "failures", "locked_until")
        return int(values[0] or 0), float(values[1] or 0)

    async def record_failure(self, subject: str, window_s: float) -> int:
        key = f"{PREFIX}login-failures:{subject}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "failures", 1)
            pipe.expire(key, max(1, int(window_s)))
            failures, _ = await pipe.execute()
        return int(failures)

    async def lock_subject(self, subject: str, until: float) -> None:
        await self.redis.hset(f"{PREFIX}login-failures:{subject}", "locked_until", str(until))

    async def forget_failures(self, subject: str) -> None:
        await self.redis.delete(f"{PREFIX}login-failures:{subject}")
