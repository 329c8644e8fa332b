"""A day of the books for one tenant or everyone: what ``GetUsage`` answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.router.repository import UsageTotals


@dataclass(frozen=True)
class UsageReport:
    cost_usd: float
    budget_usd: float  # the tenant's own daily budget, else the global one
    requests: int
    prompt_tokens: int
    completion_tokens: int
    fallbacks: int
    errors: int


class UsageStore(Protocol):
    async def usage(self, tenant_id: str | None, start: datetime) -> UsageTotals: ...
    async def tenant_budget(self, tenant_id: str) -> float | None: ...


class UsageBooks:
    def __init__(self, store: UsageStore, global_budget_usd: float) -> None:
        self.store = store
        self.global_budget_usd = global_budget_usd

    async def usage(self, tenant_id: str | None, start: datetime) -> UsageReport:
        """The UTC day beginning at ``start``, for ``tenant_id`` or (None) every tenant."""
        totals = await self.store.usage(tenant_id, start)
        budget = await self.store.tenant_budget(tenant_id) if tenant_id is not None else None
        return UsageReport(
            cost_usd=totals.cost_usd,
            budget_usd=budget if budget is not None else self.global_budget_usd,
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            fallbacks=totals.fallbacks,
            errors=totals.errors,
        )
