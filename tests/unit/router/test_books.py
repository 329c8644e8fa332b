"""Cost arithmetic against the price table, spend counters and budget decisions, the cache key, SSE
parsing and Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from services.common.chat import Message, SamplingParams, Usage
from services.router.budget import (
    Budgets,
    SpendCounters,
    Spent,
    day_start,
    global_spend_key,
    key_tokens_key,
    seconds_to_midnight,
    tenant_spend_key,
    utc_day,
)
from services.router.cache import cache_key, cacheable
from services.router.catalog import build_catalog, load_file_layers
from services.router.providers.base import CallContext
from services.router.providers.http import retry_after_seconds, sse_events
from services.router.repository import UsageTotals
from services.router.usage import UsageBooks
from tests.unit.router.conftest import FakeRedis

NOON = 1_767_268_800.0  # 2026-01-01T12:00:00Z
NOON_START = day_start(NOON)


@pytest.mark.parametrize(
    ("model_id", "prompt", "completion", "expected"),
    [
        ("openai/gpt-4o-mini", 1_000_000, 1_000_000, 0.15 + 0.60),
        ("openai/gpt-4o-mini", 1200, 350, (1200 * 0.15 + 350 * 0.60) / 1e6),
        ("anthropic/claude-sonnet-4-5", 10_000, 2_000, 0.03 + 0.03),
        ("gemini/gemini-2.5-flash", 3, 0, 3 * 0.30 / 1e6),
        ("deepseek/deepseek-chat", 0, 0, 0.0),
    ],
)
def test_cost_is_tokens_times_the_per_million_price(
    model_id: str, prompt: int, completion: int, expected: float
) -> None:
    catalog = build_catalog(load_file_layers(None))
    assert catalog.models[model_id].cost_usd(Usage(prompt, completion)) == pytest.approx(expected, rel=1e-12)


def test_day_keys_and_midnight() -> None:
    assert utc_day(NOON) == "2026-01-01"
    assert seconds_to_midnight(NOON) == 12 * 3600
    assert global_spend_key("2026-01-01") == "goblin:router:2026-01-01:spend:global"
    assert tenant_spend_key("d", "acme").endswith(":spend:tenant:acme")
    assert key_tokens_key("d", "k1").endswith(":tokens:key:k1")


async def test_spend_counters_mirror_redis_and_push_increments_in_batches() -> None:
    redis = FakeRedis()
    redis.data["g"] = b"1.5"
    counters = SpendCounters(lambda: redis)
    assert await counters.get(["g", "t"]) == [1.5, 0.0]
    counters.add("g", 0.25)
    counters.add("t", 2)
    assert await counters.get(["g", "t"]) == [1.75, 2.0], "our own charges count at once"
    assert redis.data["g"] == b"1.5", "...and reach Redis with the next sync"
    redis.data["g"] = b"3.5"  # another replica spent 2.0 meanwhile
    await counters.sync()
    assert float(redis.data["g"]) == 3.75 and float(redis.data["t"]) == 2.0
    assert await counters.get(["g", "t"]) == [3.75, 2.0]
    assert redis.ttl["g"] == 2 * 86400
    redis.down = True
    counters.add("g", 1.0)
    await counters.sync()  # fails: kept for next time
    redis.down = False
    await counters.sync()
    assert float(redis.data["g"]) == 4.75


class Store:
    async def spent_since(self, start):  # noqa: ANN001, ANN201
        return Spent(0.0, {}, {})

    async def usage(self, tenant_id, start):  # noqa: ANN001, ANN201
        return UsageTotals(cost_usd=0.5, requests=3)


async def test_budget_status_per_scope_from_the_limits_the_context_carries() -> None:
    redis = FakeRedis()
    budgets = Budgets(SpendCounters(lambda: redis), Store(), global_budget_usd=50, clock=lambda: NOON)
    acme = CallContext(tenant_id="acme", api_key_id="k1", tenant_daily_budget_usd=1.0, key_tokens_per_day=1000)
    other = CallContext(tenant_id="other", api_key_id="k2")
    assert (await budgets.status(acme)).money
    budgets.charge("acme", "k1", cost_usd=0.99, tokens=999)
    status = await budgets.status(acme)
    assert status.money and status.tokens
    budgets.charge("acme", "k1", cost_usd=0.01, tokens=0)
    status = await budgets.status(acme)
    assert not status.money and status.tokens and status.scope == "tenant"
    assert status.retry_after == 12 * 3600
    assert (await budgets.status(CallContext(tenant_id="acme", api_key_id="k1"))).money, "no limit: unlimited"
    assert (await budgets.status(other)).money, "other tenants are not affected"
    budgets.charge("acme", "k1", cost_usd=0, tokens=1)
    status = await budgets.status(acme)
    assert not status.tokens and status.scope == "api_key"
    budgets.charge("other", "k2", cost_usd=49.0, tokens=0)
    status = await budgets.status(other)
    assert not status.money and status.scope == "global" and "GOBLIN_DAILY_BUDGET_USD" in status.reason


async def test_usage_reports_the_callers_own_budget_only() -> None:
    books = UsageBooks(Store(), global_budget_usd=50)
    capped = CallContext(tenant_id="acme", tenant_daily_budget_usd=2.5)
    assert (await books.usage("acme", NOON_START, capped)).budget_usd == 2.5
    assert (await books.usage("acme", NOON_START, CallContext(tenant_id="acme"))).budget_usd == 50
    assert (await books.usage("other", NOON_START, capped)).budget_usd == 0, "another tenant's budget is auth's"
    report = await books.usage(None, NOON_START, capped)
    assert report.budget_usd == 0 and report.requests == 3 and report.cost_usd == 0.5


def test_only_temperature_zero_non_bypassed_requests_are_cacheable() -> None:
    assert cacheable(SamplingParams(temperature=0), 60, bypass=False)
    assert not cacheable(SamplingParams(temperature=0), 0, bypass=False)
    assert not cacheable(SamplingParams(temperature=0), 60, bypass=True)
    assert not cacheable(SamplingParams(), 60, bypass=False)
    assert not cacheable(SamplingParams(temperature=0.1), 60, bypass=False)


def test_the_cache_key_covers_tenant_models_messages_and_params() -> None:
    base = cache_key("t", ["a/x"], [Message("user", "hi")], SamplingParams(temperature=0))
    assert base == cache_key("t", ["a/x"], [Message("user", "hi")], SamplingParams(temperature=0))
    variants = [
        cache_key("u", ["a/x"], [Message("user", "hi")], SamplingParams(temperature=0)),
        cache_key("t", ["b/x"], [Message("user", "hi")], SamplingParams(temperature=0)),
        cache_key("t", ["a/x"], [Message("user", "hi!")], SamplingParams(temperature=0)),
        cache_key("t", ["a/x"], [Message("system", "hi")], SamplingParams(temperature=0)),
        cache_key("t", ["a/x"], [Message("user", "hi")], SamplingParams(temperature=0, max_tokens=5)),
        cache_key("t", ["a/x"], [Message("user", "hi")], SamplingParams(temperature=0, stop=("x",))),
    ]
    assert len({base, *variants}) == 7


async def test_sse_parser_follows_the_event_stream_rules() -> None:
    async def lines():  # noqa: ANN202
        for line in [
            "event: a",
            "data: one",
            "data:two",
            ": comment",
            "",
            "data: {}",
            "",
            "",
            "id: 3",
            "data: last",
        ]:
            yield line

    events = [(e.event, e.data) async for e in sse_events(lines())]
    assert events == [("a", "one\ntwo"), ("message", "{}"), ("message", "last")]


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "12"}) == 12
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now=NOON) == 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_budgets_push_charges_in_the_background() -> None:
    redis = FakeRedis()
    budgets = Budgets(SpendCounters(lambda: redis), Store(), global_budget_usd=50, sync_s=0.01, clock=lambda: NOON)
    key = global_spend_key(utc_day(NOON))
    await budgets.start()
    assert await budgets.healthy()
    budgets.charge("acme", "k1", cost_usd=0.5, tokens=10)
    for _ in range(200):
        if key in redis.data:
            break
        await asyncio.sleep(0.005)
    assert float(redis.data[key]) == 0.5
    await budgets.stop()
    assert not await budgets.healthy()


async def test_stopping_budgets_pushes_the_charges_not_synced_yet() -> None:
    redis = FakeRedis()
    budgets = Budgets(SpendCounters(lambda: redis), Store(), global_budget_usd=50, sync_s=3600, clock=lambda: NOON)
    await budgets.start()
    budgets.charge("acme", "k1", cost_usd=0.25, tokens=0)
    await asyncio.sleep(0.02)
    assert redis.data == {}
    await budgets.stop()
    assert float(redis.data[global_spend_key(utc_day(NOON))]) == 0.25
