"""A day of the books for one tenant or everyone: what ``GetUsage`` answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.router.providers.base import CallContext
from services.router.repository import UsageTotals


@dataclass(frozen=True)
class UsageReport:
    cost_usd: float
    budget_usd: float  # see UsageBooks.budget_usd
    requests: int
    prompt_tokens: int
    completion_tokens: int
    fallbacks: int
    errors: int


class UsageStore(Protocol):
    async def usage(self, tenant_id: str | None, start: datetime) -> UsageTotals: ...


class UsageBooks:
    def __init__(self, store: UsageStore, global_budget_usd: float) -> None:
        self.store = store
        self.global_budget_usd = global_budget_usd

    async def usage(self, tenant_id: str | None, start: datetime, caller: CallContext) -> UsageReport:
        """The UTC day beginning at ``start``, for ``tenant_id`` or (None) every tenant, as ``caller`` asks."""
        totals = await self.store.usage(tenant_id, start)
        return UsageReport(
            cost_usd=totals.cost_usd,
            budget_usd=self.budget_usd(tenant_id, caller),
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            fallbacks=totals.fallbacks,
            errors=totals.errors,
        )

    def budget_usd(self, tenant_id: str | None, caller: CallContext) -> float:
        """The caller's own tenant: its daily budget from the context, else the global one. Another
        tenant, or everyone: 0, since budgets live with auth's tenants, which the router does not read."""
        if tenant_id is None or tenant_id != caller.tenant_id:
            return 0.0
        if caller.tenant_daily_budget_usd is not None:
            return caller.tenant_daily_budget_usd
        return self.global_budget_usd
