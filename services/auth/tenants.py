"""Tenants and their request quota: admin management, and the per-day request count every metered call
is charged against."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cachetools import TTLCache

from services.auth.accounts import TENANT_ID_PATTERN, valid_name, valid_quota
from services.auth.context import Context
from services.auth.metrics import SECURITY_EVENTS
from services.auth.permissions import Permissions
from services.auth.repository import AuditEvent, TenantRecord
from services.common.context import hash_user_id
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted

# A tenant's quota is read at most this often per replica; a change applies within this time.
TENANT_CACHE_S = 30.0
_UNKNOWN = object()


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int
    resets_at: int


class TenantLookup(Protocol):
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...


class TenantStore(TenantLookup, Protocol):
    async def audit(self, event: AuditEvent) -> None: ...
    async def list_tenants(self) -> list[TenantRecord]: ...
    async def update_tenant(
        self, tenant_id: str, changes: dict[str, Any], audit: AuditEvent | None = None
    ) -> TenantRecord | None: ...


class RequestCounter(Protocol):
    async def count_request(self, tenant_id: str, day: str, expire_at: int) -> int: ...


class TenantCreator(Protocol):
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
    ) -> TenantRecord: ...


def next_utc_midnight(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=1)).timestamp())


class TenantCache:
    """Tenants as this replica last read them: every verified credential and every charged request
    needs its tenant's quota, which must not cost a query each time."""

    def __init__(self, store: TenantLookup) -> None:
        self.store = store
        self._tenants: TTLCache[str, TenantRecord | None] = TTLCache(maxsize=4096, ttl=TENANT_CACHE_S)

    async def get(self, tenant_id: str) -> TenantRecord | None:
        cached = self._tenants.get(tenant_id, _UNKNOWN)
        if cached is not _UNKNOWN:
            return cached  # type: ignore[return-value]
        tenant = await self.store.get_tenant(tenant_id)
        self._tenants[tenant_id] = tenant
        return tenant

    async def requests_per_day(self, tenant_id: str) -> int:
        """The tenant's request quota; 0 is unlimited (also for a tenant that does not exist)."""
        tenant = await self.get(tenant_id)
        return (tenant.requests_per_day or 0) if tenant else 0

    async def daily_budget_usd(self, tenant_id: str) -> float | None:
        """The tenant's dollar budget per UTC day, which the router enforces; None is unlimited."""
        tenant = await self.get(tenant_id)
        return tenant.daily_budget_usd if tenant else None

    def forget(self, tenant_id: str) -> None:
        """Drop the cached copy, so a change made through this replica applies here at once."""
        self._tenants.pop(tenant_id, None)


class Tenants:
    def __init__(
        self,
        store: TenantStore,
        counter: RequestCounter,
        *,
        accounts: TenantCreator,
        permissions: Permissions,
        cache: TenantCache,
    ) -> None:
        self.store = store
        self.counter = counter
        self.accounts = accounts
        self.permissions = permissions
        self.cache = cache

    async def create(
        self,
        ctx: Context,
        *,
        tenant_id: str,
        name: str,
        requests_per_day: int,
        tokens_per_day: int,
        daily_budget_usd: float,
    ) -> TenantRecord:
        """A new tenant (admin only); an empty ``tenant_id`` is made from the name."""
        admin = await self.permissions.admin(ctx)
        return await self.accounts.create_tenant(
            tenant_id=tenant_id,
            name=name,
            requests_per_day=requests_per_day,
            tokens_per_day=tokens_per_day,
            daily_budget_usd=daily_budget_usd,
            by=hash_user_id(admin.id),
            correlation_id=ctx.correlation_id,
        )

    async def update(self, ctx: Context, tenant_id: str, changes: dict[str, Any]) -> TenantRecord:
        """Change the name or quotas named in ``changes`` (admin only)."""
        admin = await self.permissions.admin(ctx)
        if not TENANT_ID_PATTERN.match(tenant_id):
            raise NotFound("no such tenant")
        cleaned: dict[str, Any] = {}
        for column, value in changes.items():
            cleaned[column] = valid_name(value) if column == "name" else valid_quota(value, column)
        tenant = await self.store.update_tenant(
            tenant_id,
            cleaned,
            audit=ctx.audit_event("tenant_updated", tenant_id=tenant_id, by=hash_user_id(admin.id), **cleaned),
        )
        if tenant is None:
            raise NotFound("no such tenant")
        self.cache.forget(tenant_id)
        return tenant

    async def list_all(self, ctx: Context) -> list[TenantRecord]:
        """Every tenant (admin only)."""
        await self.permissions.admin(ctx)
        return await self.store.list_tenants()

    async def charge_request(self, ctx: Context) -> QuotaStatus:
        """Count one request against the tenant's requests/day quota (per UTC day, shared by every
        replica). Past the quota: :class:`ResourceExhausted` with the seconds until midnight UTC."""
        if not ctx.tenant_id:
            raise InvalidArgument("context.tenant_id: required")
        now = time.time()
        resets_at = next_utc_midnight(now)
        limit = await self.cache.requests_per_day(ctx.tenant_id)
        if not limit:
            return QuotaStatus(used=0, limit=0, resets_at=resets_at)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        used = await self.counter.count_request(ctx.tenant_id, day, resets_at + 3600)
        if used > limit:
            if used == limit + 1:  # once per tenant and day
                SECURITY_EVENTS.labels("quota_exhausted").inc()
                await self.store.audit(
                    ctx.audit_event("quota_exhausted", user_id=ctx.user_id, quota="requests_per_day", limit=limit)
                )
            raise ResourceExhausted(
                f"your tenant's quota of {limit} requests per day is used up; it resets at 00:00 UTC",
                code="quota_exceeded",
                retry_after=resets_at - now,
            )
        return QuotaStatus(used=used, limit=limit, resets_at=resets_at)
