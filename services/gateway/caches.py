"""What the gateway keeps from the auth service's answers, so most requests cost it no round trip:
verified principals (by credential digest) and the public JWKS document."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable

from cachetools import TLRUCache, TTLCache

from goblin.v1 import auth_pb2

PRINCIPAL_CACHE_SIZE = 10_000
# The JWKS document is served from here for this long; verifiers cache it longer (Cache-Control).
JWKS_LOCAL_CACHE_S = 5.0
# While this replica cannot hear its peers' invalidations (services/gateway/invalidation.py), a cached
# principal is trusted for this long at most, not the full TTL: a change made through another replica
# then reaches this one within this bound, at the price of a round trip to auth per credential per second.
UNSUBSCRIBED_TTL_S = 1.0
# A miss is remembered this long (at least the auth call's timeout): an answer auth gave to a request
# that missed before a forget must not be stored after it (see PrincipalCache.put).
MISS_MEMORY_S = 6.0
# The id index may hold this many times the cache's size in references (entries that lapsed or were
# evicted leave theirs behind) before it is rebuilt from the live entries.
INDEX_SLACK = 4


def principal_ids(principal: auth_pb2.Principal) -> list[tuple[str, str]]:
    """The (kind, id) names a principal can be forgotten by: its user, tenant, API key and session."""
    names = (
        ("user", principal.user_id),
        ("tenant", principal.tenant_id),
        ("key", principal.api_key_id),
        ("session", principal.session_id),
    )
    return [name for name in names if name[1]]


class PrincipalCache:
    """Verified principals by SHA-256 of their credential (the credential itself is never kept),
    each for ``ttl_s`` or until the credential expires, whichever comes first; while the replica is not
    known to hear its peers' invalidations (see :meth:`trust_until`), for ``UNSUBSCRIBED_TTL_S`` at most."""

    def __init__(self, ttl_s: float, maxsize: int = PRINCIPAL_CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self._entries: TLRUCache[bytes, tuple[auth_pb2.Principal, float]] = TLRUCache(maxsize, ttu=self._expires)
        # Until when (monotonic) peers' invalidations are known to reach this replica. A cache nobody
        # subscribes for (one process, no peers) keeps the full TTL; the gateway's subscriber
        # (invalidation.py) distrusts it from the start until it hears its peers.
        self._trusted_until = math.inf
        # Bumped by every forget and clear; a miss remembers the generation it saw, and an answer to it
        # is stored only if none came between (auth may have answered from before the change).
        self._generation = 0
        self._misses: TTLCache[bytes, int] = TTLCache(maxsize, ttl=MISS_MEMORY_S)
        # (kind, id) -> the keys of the entries naming it, so forgetting costs what it forgets, not a
        # scan of the whole cache (every sign-out on any replica forgets on every replica).
        self._index: dict[tuple[str, str], set[bytes]] = {}
        self._indexed = 0

    def _expires(self, _key: bytes, entry: tuple[auth_pb2.Principal, float], now: float) -> float:
        principal = entry[0]
        ttl = self.ttl_s
        if principal.expires_at:
            ttl = min(ttl, principal.expires_at - time.time())
        return now + ttl

    @staticmethod
    def key(credential: str) -> bytes:
        """The cache key of a credential: its SHA-256 digest."""
        return hashlib.sha256(credential.encode()).digest()

    def get(self, credential: str) -> auth_pb2.Principal | None:
        """The cached principal of ``credential``, if it is still fresh."""
        key = self.key(credential)
        entry = self._entries.get(key)
        if entry is not None:
            principal, stored_at = entry
            now = time.monotonic()
            # Unless peers' changes are known to reach this replica, trust an entry for a second only.
            if now <= self._trusted_until or now - stored_at <= UNSUBSCRIBED_TTL_S:
                return principal
        self._misses[key] = self._generation
        return None

    def put(self, credential: str, principal: auth_pb2.Principal) -> None:
        """Keep ``principal`` (unless caching is off, the credential has already expired, or something
        was forgotten since this credential's miss: auth may have answered from before that change,
        and the next request asks again)."""
        key = self.key(credential)
        missed_at = self._misses.pop(key, self._generation)
        if self.ttl_s <= 0 or (principal.expires_at and principal.expires_at <= time.time()):
            return
        if missed_at != self._generation:
            return
        self._entries[key] = (principal, time.monotonic())
        for name in principal_ids(principal):
            bucket = self._index.setdefault(name, set())
            if key not in bucket:
                bucket.add(key)
                self._indexed += 1
        if self._indexed > INDEX_SLACK * self._entries.maxsize:
            self._reindex()

    def _reindex(self) -> None:
        self._index = {}
        self._indexed = 0
        for key, (principal, _) in list(self._entries.items()):
            for name in principal_ids(principal):
                self._index.setdefault(name, set()).add(key)
                self._indexed += 1

    def trust_until(self, deadline: float) -> None:
        """Peers' invalidations are known to reach this replica until ``deadline`` (monotonic); past
        it, and after :meth:`distrust`, cached principals live ``UNSUBSCRIBED_TTL_S`` at most."""
        self._trusted_until = deadline

    def distrust(self) -> None:
        """Peers' invalidations no longer reach this replica (its subscription is lost)."""
        self._trusted_until = 0.0

    def clear(self) -> None:
        """Forget everything (after invalidations may have been missed), answers in flight included."""
        self._generation += 1
        self._entries.clear()
        self._index.clear()
        self._indexed = 0

    def forget(
        self,
        *,
        api_key_id: str = "",
        session_id: str = "",
        tenant_id: str = "",
        user_id: str = "",
    ) -> int:
        """Drop every cached principal of one API key or one session (revoked), of one tenant (its
        quotas and budget, which principals carry, changed), or of one account (switched off or its role
        changed); how many were dropped. See :meth:`forget_all`."""
        return self.forget_all(
            api_key_ids=(api_key_id,), session_ids=(session_id,), tenant_ids=(tenant_id,), user_ids=(user_id,)
        )

    def forget_all(
        self,
        *,
        api_key_ids: Iterable[str] = (),
        session_ids: Iterable[str] = (),
        tenant_ids: Iterable[str] = (),
        user_ids: Iterable[str] = (),
    ) -> int:
        """Drop every cached principal naming any of these ids (through the id index: the cost is what
        is forgotten), and any answer in flight. Empty ids name nothing."""
        names = [
            (kind, value)
            for kind, values in (
                ("key", api_key_ids),
                ("session", session_ids),
                ("tenant", tenant_ids),
                ("user", user_ids),
            )
            for value in set(values)
            if value
        ]
        if not names:
            return 0
        self._generation += 1
        forgotten = 0
        for name in names:
            for key in self._index.pop(name, ()):
                if self._entries.pop(key, None) is not None:
                    forgotten += 1
        return forgotten


class JwksCache:
    """The JWKS document for ``JWKS_LOCAL_CACHE_S``, so serving it costs no round trip per request."""

    def __init__(self, ttl_s: float = JWKS_LOCAL_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._fetched_at = 0.0
        self._document: str | None = None

    def get(self) -> str | None:
        """The document, if it was fetched within the TTL."""
        if self._document is None or time.monotonic() - self._fetched_at > self.ttl_s:
            return None
        return self._document

    def put(self, document: str) -> None:
        """Keep a freshly fetched document."""
        self._fetched_at, self._document = time.monotonic(), document

    def forget(self) -> None:
        """After a rotation through this gateway: fetch the new key set on the next request."""
        self._document = None
