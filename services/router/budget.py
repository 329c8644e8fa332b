"""Daily budgets: US dollars per tenant and in total, tokens per API key; days are UTC days.

Spend lives in Redis counters shared by every router replica (``goblin:router:<day>:...``). The hot
path never waits on Redis: each replica keeps a mirror of the counters it uses, adds its own charges
to the mirror at once, and exchanges them with Redis in one pipeline every ``sync_s`` (pushing its
increments, reading the others'). Only the first request of a tenant or key in a day reads Redis
inline. Every ``reconcile_s`` the counters are raised to what ``routing_requests`` says was spent, so a
flushed or restarted Redis does not forget the day's spending.

The limits come with the request: the auth service reads the tenant's dollar budget and the API key's
token budget when it verifies the credential, and the gateway forwards them in the RequestContext
(:class:`~services.router.providers.base.CallContext`). The router never reads auth's tables; a changed
budget applies once the gateway verifies the credential again (at once on the gateway that took the
change, within ``GOBLIN_AUTH_CACHE_TTL_S`` on the others).

Over budget means spent >= budget: a tenant or the whole installation over its dollar budget can still
use free (local) models; an API key over its token budget can use nothing until midnight UTC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.common.background import BackgroundLoop
from services.router.metrics import BUDGET_SYNC_ERRORS, DAILY_BUDGET
from services.router.providers.base import CallContext

log = logging.getLogger(__name__)

KEY_TTL_S = 2 * 86_400
WATCH_S = 300.0  # a counter nobody asked about for this long is no longer refreshed

# Raise a counter to a floor, never lower it (reconciliation with the database).
RAISE_TO_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if floor > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return ARGV[1]
end
return tostring(current)
"""


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def day_start(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_midnight(now: float) -> float:
    """Seconds until the next UTC day begins (when every daily budget resets)."""
    return (day_start(now) + timedelta(days=1)).timestamp() - now


def global_spend_key(day: str) -> str:
    return f"goblin:router:{day}:spend:global"


def tenant_spend_key(day: str, tenant_id: str) -> str:
    return f"goblin:router:{day}:spend:tenant:{tenant_id}"


def key_tokens_key(day: str, api_key_id: str) -> str:
    return f"goblin:router:{day}:tokens:key:{api_key_id}"


class SpendCounters:
    """Redis counters mirrored in memory (see the module docstring)."""

    def __init__(self, redis: Callable[[], Any], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis  # returns the client; it may only exist once the store has started
        self.clock = clock
        self._values: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._watched: dict[str, float] = {}

    async def get(self, keys: list[str]) -> list[float]:
        now = self.clock()
        missing = [k for k in keys if k not in self._values]
        if missing:
            stored = await self._redis().mget(missing)
            for key, value in zip(missing, stored, strict=True):
                self._values[key] = float(value or 0) + self._pending.get(key, 0.0)
        for key in keys:
            self._watched[key] = now
        return [self._values[k] for k in keys]

    def add(self, key: str, amount: float) -> None:
        if not amount:
            return
        self._pending[key] = self._pending.get(key, 0.0) + amount
        if key in self._values:
            self._values[key] += amount

    async def sync(self) -> None:
        """Push our increments, read everyone's totals."""
        now = self.clock()
        for key in [k for k, t in self._watched.items() if now - t > WATCH_S]:
            del self._watched[key]
            self._values.pop(key, None)
        pending, self._pending = self._pending, {}
        reads = [k for k in self._watched if k not in pending]
        if not pending and not reads:
            return
        pipe = self._redis().pipeline(transaction=False)
        for key, amount in pending.items():
            pipe.incrbyfloat(key, amount)
            pipe.expire(key, KEY_TTL_S)
        for key in reads:
            pipe.get(key)
        try:
            results = await pipe.execute()
        except Exception:
            BUDGET_SYNC_ERRORS.inc()
            log.warning("could not sync spend counters with redis; retrying", exc_info=True)
            for key, amount in pending.items():
                self._pending[key] = self._pending.get(key, 0.0) + amount
            return
        totals = dict(zip(pending, results[0 : 2 * len(pending) : 2], strict=True))
        totals.update(zip(reads, results[2 * len(pending) :], strict=True))
        for key, value in totals.items():
            if key in self._watched:
                self._values[key] = float(value or 0) + self._pending.get(key, 0.0)

    async def raise_to(self, floors: Mapping[str, float]) -> None:
        """Raise each counter to at least ``floors[key]`` (what the database says was spent)."""
        if not floors:
            return
        pipe = self._redis().pipeline(transaction=False)
        for key, floor in floors.items():
            pipe.eval(RAISE_TO_FLOOR, 1, key, repr(float(floor)), KEY_TTL_S)
        results = await pipe.execute()
        for key, value in zip(floors, results, strict=True):
            if key in self._values:
                self._values[key] = max(self._values[key], float(value) + self._pending.get(key, 0.0))


@dataclass(frozen=True)
class Spent:
    """Today's totals as of the last reconciliation."""

    global_usd: float
    tenant_usd: Mapping[str, float]
    key_tokens: Mapping[str, int]


class BudgetStore(Protocol):
    async def spent_since(self, start: datetime) -> Spent: ...


@dataclass(frozen=True)
class BudgetStatus:
    """What may still be spent: ``money`` False means paid models are refused, ``tokens`` False means
    everything is. ``reason`` says which budget ran out."""

    money: bool = True
    tokens: bool = True
    reason: str = ""
    scope: str = ""
    retry_after: float = 0.0


OK = BudgetStatus()


class Budgets:
    def __init__(
        self,
        counters: SpendCounters,
        store: BudgetStore,
        *,
        global_budget_usd: float,
        sync_s: float = 0.5,
        reconcile_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.store = store
        self.global_budget_usd = global_budget_usd
        DAILY_BUDGET.set(global_budget_usd)
        self.sync_s = sync_s
        self.reconcile_s = reconcile_s
        self.clock = clock
        self._day, self._day_ends = "", 0.0
        self._last_reconcile = 0.0
        # Stopping pushes this replica's last increments, so they are not lost with the process.
        self._loop = BackgroundLoop(
            "budget-sync",
            self._sync_or_reconcile,
            every_s=sync_s,
            final=counters.sync,
            failure_message="budget sync failed; retrying",
            failures_metric=BUDGET_SYNC_ERRORS,
            logger=log,
        )

    def _today(self, now: float) -> str:
        """The UTC day of ``now`` (remembered until midnight: formatting dates costs microseconds)."""
        if now >= self._day_ends or now < self._day_ends - 86_400:
            self._day = utc_day(now)
            self._day_ends = (day_start(now) + timedelta(days=1)).timestamp()
        return self._day

    async def status(self, context: CallContext) -> BudgetStatus:
        """May this caller spend now, under the limits its context carries? Reads only memory once the
        day's counters are known."""
        tenant_id, api_key_id = context.tenant_id, context.api_key_id
        tenant_budget_usd, key_tokens_per_day = context.tenant_daily_budget_usd, context.key_tokens_per_day
        now = self.clock()
        day = self._today(now)
        keys = [global_spend_key(day)]
        if tenant_id:
            keys.append(tenant_spend_key(day, tenant_id))
        if api_key_id:
            keys.append(key_tokens_key(day, api_key_id))
        values = await self.counters.get(keys)
        spent_global = values[0]
        spent_tenant = values[1] if tenant_id else 0.0
        tokens = values[-1] if api_key_id else 0.0
        retry_after = self._day_ends - now
        if api_key_id and key_tokens_per_day is not None and tokens >= key_tokens_per_day:
            return BudgetStatus(
                money=False,
                tokens=False,
                scope="api_key",
                reason=f"this API key's daily token budget ({key_tokens_per_day:,} tokens) is used up",
                retry_after=retry_after,
            )
        if tenant_id and tenant_budget_usd is not None and spent_tenant >= tenant_budget_usd:
            return BudgetStatus(
                money=False,
                scope="tenant",
                reason=f"tenant '{tenant_id}' has spent its daily budget "
                f"(${spent_tenant:.4f} of ${tenant_budget_usd:.2f})",
                retry_after=retry_after,
            )
        if spent_global >= self.global_budget_usd:
            return BudgetStatus(
                money=False,
                scope="global",
                reason=f"the daily budget is spent (${spent_global:.4f} of ${self.global_budget_usd:.2f}, "
                "GOBLIN_DAILY_BUDGET_USD)",
                retry_after=retry_after,
            )
        return OK

    def charge(self, tenant_id: str, api_key_id: str, cost_usd: float, tokens: int) -> None:
        """Count a finished request: no I/O, the counters reach Redis with the next sync."""
        day = self._today(self.clock())
        if cost_usd:
            self.counters.add(global_spend_key(day), cost_usd)
            if tenant_id:
                self.counters.add(tenant_spend_key(day, tenant_id), cost_usd)
        if tokens and api_key_id:
            self.counters.add(key_tokens_key(day, api_key_id), tokens)

    async def reconcile(self) -> None:
        """Raise today's counters to what the books say (after pushing our own increments)."""
        await self.counters.sync()
        now = self.clock()
        day = utc_day(now)
        spent = await self.store.spent_since(day_start(now))
        floors: dict[str, float] = {global_spend_key(day): spent.global_usd}
        floors.update({tenant_spend_key(day, t): usd for t, usd in spent.tenant_usd.items()})
        floors.update({key_tokens_key(day, k): float(n) for k, n in spent.key_tokens.items()})
        await self.counters.raise_to({k: v for k, v in floors.items() if v > 0})

    async def start(self) -> None:
        """Reconcile once (a failure here is the caller's to retry), then sync in the background."""
        await self.reconcile()
        self._last_reconcile = time.monotonic()
        await self._loop.start()

    async def healthy(self) -> bool:
        """Whether the background sync is running."""
        return await self._loop.healthy()

    async def stop(self) -> None:
        """Stop syncing and push this replica's last increments to Redis."""
        await self._loop.stop()

    async def _sync_or_reconcile(self) -> None:
        if time.monotonic() - self._last_reconcile >= self.reconcile_s:
            self._last_reconcile = time.monotonic()
            await self.reconcile()
        else:
            await self.counters.sync()
