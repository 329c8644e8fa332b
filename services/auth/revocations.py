"""Whether an access token's session has ended: Postgres decides, Redis remembers the answer.

A session ends when it is signed out, when one of its refresh tokens is reused, or when its account is
disabled or gone. Postgres holds all of these durably (``sessions.revoked_at``, ``users.is_active``), so
a Redis that lost its data forgets nothing that matters: a miss is answered from Postgres and an ended
session is cached again. Live sessions are not cached here: the gateway already keeps each verified
principal for ``GOBLIN_AUTH_CACHE_TTL_S``, so a token costs at most one indexed read per that interval,
and a disabled account is refused by the very next verification.
"""

from __future__ import annotations

from typing import Protocol


class EndedSessionCache(Protocol):
    async def revoke_session(self, session_id: str, ttl_s: int) -> None: ...
    async def session_revoked(self, session_id: str) -> bool: ...


class SessionLiveness(Protocol):
    async def session_ended(self, family: str, user_id: str) -> bool: ...


class SessionRevocations:
    """The revocation check of the access-token path."""

    def __init__(self, store: SessionLiveness, cache: EndedSessionCache, *, remember_s: int) -> None:
        self.store = store
        self.cache = cache
        # An ended session needs remembering only while its access tokens could still be presented.
        self.remember_s = remember_s

    async def session_ended(self, session_id: str, user_id: str) -> bool:
        """True if the session ``session_id`` of ``user_id`` was revoked or its account is disabled."""
        if await self.cache.session_revoked(session_id):
            return True
        if not await self.store.session_ended(session_id, user_id):
            return False
        await self.cache.revoke_session(session_id, self.remember_s)
        return True
