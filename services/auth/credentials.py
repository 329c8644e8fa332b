"""Credential verification: a bearer credential (API key or access token) in, a :class:`Principal` out.

This is the one path every authenticated request takes (the gateway caches its answers briefly), so
it stays cheap: one indexed read for an API key, one for an access token (has its session ended, is its
account still active: :mod:`services.auth.revocations`), and the tenant's quota from
:class:`~services.auth.tenants.TenantCache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cachetools import TTLCache

from services.auth.accounts import API_KEY_PREFIX, hash_api_key
from services.auth.metrics import AUTHENTICATIONS
from services.auth.repository import ApiKeyRecord
from services.auth.tenants import TenantCache
from services.auth.tokens import AccessClaims, looks_like_jwt
from services.common.errors import Unauthenticated

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
    requests_per_day: int = 0
    # The budgets the router enforces, forwarded with the principal (None: unlimited).
    tenant_daily_budget_usd: float | None = None
    key_tokens_per_day: int | None = None


class ApiKeyLookup(Protocol):
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def touch_api_key(self, key_id: str) -> None: ...


class RevokedSessions(Protocol):
    async def session_ended(self, session_id: str, user_id: str) -> bool: ...


class AccessTokenVerifier(Protocol):
    async def verify(self, token: str) -> AccessClaims: ...


def credential_kind(credential: str) -> str:
    if credential.startswith(API_KEY_PREFIX):
        return "api_key"
    return "access_token" if looks_like_jwt(credential) else "other"


class Credentials:
    def __init__(
        self,
        keys: ApiKeyLookup,
        revoked: RevokedSessions,
        tokens: AccessTokenVerifier,
        tenants: TenantCache,
    ) -> None:
        self.keys = keys
        self.revoked = revoked
        self.tokens = tokens
        self.tenants = tenants
        self._recently_touched: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=LAST_USED_RESOLUTION_S)

    async def authenticate(self, credential: str) -> Principal:
        """The principal behind a bearer credential (API key or access token), or :class:`Unauthenticated`."""
        credential = credential.strip()
        kind = credential_kind(credential)
        try:
            if kind == "api_key":
                principal = await self._from_api_key(credential)
            elif kind == "access_token":
                principal = await self._from_access_token(credential)
            else:
                raise Unauthenticated("invalid credential" if credential else "missing credential")
        except Unauthenticated:
            AUTHENTICATIONS.labels(kind, "refused").inc()
            raise
        AUTHENTICATIONS.labels(kind, "accepted").inc()
        return principal

    async def _from_api_key(self, credential: str) -> Principal:
        record = await self.keys.find_api_key(hash_api_key(credential))
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
            requests_per_day=await self.tenants.requests_per_day(record.tenant_id),
            tenant_daily_budget_usd=record.tenant_daily_budget_usd,
            key_tokens_per_day=record.tokens_per_day,
        )

    async def _from_access_token(self, token: str) -> Principal:
        claims = await self.tokens.verify(token)
        if await self.revoked.session_ended(claims.session_id, claims.user_id):
            raise Unauthenticated("this session has ended; sign in again", code="session_revoked")
        return Principal(
            user_id=claims.user_id,
            tenant_id=claims.tenant_id,
            email=claims.email,
            role=claims.role,
            scopes=claims.scopes,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
            requests_per_day=await self.tenants.requests_per_day(claims.tenant_id),
            tenant_daily_budget_usd=await self.tenants.daily_budget_usd(claims.tenant_id),
        )

    async def _touch(self, key_id: str) -> None:
        if self._recently_touched.get(key_id) is None:
            self._recently_touched[key_id] = True
            await self.keys.touch_api_key(key_id)
