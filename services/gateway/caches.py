"""What the gateway keeps from the auth service's answers, so most requests cost it no round trip:
verified principals (by credential digest) and the public JWKS document."""

from __future__ import annotations

import hashlib
import time

from cachetools import TLRUCache

from goblin.v1 import auth_pb2

PRINCIPAL_CACHE_SIZE = 10_000
# The JWKS document is served from here for this long; verifiers cache it longer (Cache-Control).
JWKS_LOCAL_CACHE_S = 5.0


class PrincipalCache:
    """Verified principals by SHA-256 of their credential (the credential itself is never kept),
    each for ``ttl_s`` or until the credential expires, whichever comes first."""

    def __init__(self, ttl_s: float, maxsize: int = PRINCIPAL_CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self._entries: TLRUCache[bytes, auth_pb2.Principal] = TLRUCache(maxsize, ttu=self._expires)

    def _expires(self, _key: bytes, principal: auth_pb2.Principal, now: float) -> float:
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
        return self._entries.get(self.key(credential))

    def put(self, credential: str, principal: auth_pb2.Principal) -> None:
        """Keep ``principal`` (unless caching is off or the credential has already expired)."""
        if self.ttl_s <= 0 or (principal.expires_at and principal.expires_at <= time.time()):
            return
        self._entries[self.key(credential)] = principal

    def forget(self, *, api_key_id: str = "", session_id: str = "", tenant_id: str = "", user_id: str = "") -> None:
        """Drop every cached principal of one API key or one session (revoked through this replica), of
        one tenant (its quotas and budget, which principals carry, changed through this replica), or of
        one account (switched off or its role changed through this replica)."""
        stale = [
            key
            for key, principal in list(self._entries.items())
            if (api_key_id and principal.api_key_id == api_key_id)
            or (session_id and principal.session_id == session_id)
            or (tenant_id and principal.tenant_id == tenant_id)
            or (user_id and principal.user_id == user_id)
        ]
        for key in stale:
            self._entries.pop(key, None)


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
