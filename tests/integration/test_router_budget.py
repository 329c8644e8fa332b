"""Daily budgets end to end, on a suite of their own with a tiny global budget: a tenant's dollar
budget, the global one (GOBLIN_DAILY_BUDGET_USD), an API key's token budget, the 429 the client gets,
and the counters surviving a Redis that lost them.

The limits reach the router with each request, from the principal auth verified: a tenant's budget
changed through the gateway applies at once (the gateway drops that tenant's cached principals), a
key's limit changed elsewhere once the gateway's GOBLIN_AUTH_CACHE_TTL_S has passed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, start_suite
from services.router.budget import global_spend_key, utc_day
from tests.integration.test_router import (
    CATALOG,
    PROMPT_WORDS,
    SUITE_ENV,
    booked,
    flush_redis,
    messages,
    query,
    redis_db,
    wait_for,
)

GLOBAL_BUDGET = 0.002
OPUS = "anthropic/claude-opus-4-5"
# The fake answers 7 tokens to 8 prompt words: what one request costs at the catalog's prices.
OPUS_COST = (
    PROMPT_WORDS * CATALOG.models[OPUS].input_price_per_mtok + 7 * CATALOG.models[OPUS].output_price_per_mtok
) / 1e6


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def budget_suite(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
    redis_url: str,
    fake: FakeProviders,
) -> Iterator[Suite]:
    url = redis_db(redis_url, 5)
    flush_redis(url)
    suite = start_suite(
        tmp_path_factory.mktemp("budget"),
        DATABASE_URL=new_database(),
        REDIS_URL=url,
        GOBLIN_DAILY_BUDGET_USD=str(GLOBAL_BUDGET),
        GOBLIN_AUTH_CACHE_TTL_S="0.2",
        GOBLIN_BUDGET_RECONCILE_S="1",
        **SUITE_ENV,
        **fake.env(),
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def http(budget_suite: Suite) -> Iterator[httpx.Client]:
    with budget_suite.admin_client() as client:
        yield client


def ask(http: httpx.Client, model: str = OPUS, correlation: str | None = None) -> httpx.Response:
    headers = {"X-Correlation-ID": correlation} if correlation else {}
    return http.post(
        "/v1/chat/completions", json={"model": model, "messages": messages(), "max_tokens": 7}, headers=headers
    )


def set_tenant_budget(http: httpx.Client, usd: float) -> None:
    reply = http.patch("/auth/tenants/default", json={"daily_budget_usd": usd})
    assert reply.status_code == 200, reply.text


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()


def assert_budget_refusal(reply: httpx.Response, says: str) -> None:
    assert reply.status_code == 429, reply.text
    body = reply.json()
    assert body["error"] == "budget_exceeded"
    assert says in body["message"]
    retry_after = int(reply.headers["Retry-After"])
    assert abs(retry_after - seconds_to_utc_midnight()) <= 5, "budgets reset at midnight UTC"
    assert body["retry_after"] == retry_after


def test_a_tenant_over_its_daily_budget_is_refused_before_any_provider_call(
    budget_suite: Suite, http: httpx.Client, fake: FakeProviders
) -> None:
    set_tenant_budget(http, 2.5 * OPUS_COST)
    spent, answered = 0.0, 0
    while True:
        reply = ask(http, correlation=f"tenant-{answered}")
        if reply.status_code != 200:
            break
        answered += 1
        spent += OPUS_COST
        assert answered <= 3, "the tenant budget was not enforced"
    assert answered == 3, "refused only once spent >= budget: 3 x cost > 2.5 x cost"
    assert_budget_refusal(reply, "tenant 'default'")
    assert len(fake.requests("anthropic")) == 3, "the refused request never reached the provider"
    assert booked(budget_suite, "tenant-3")["outcome"] == "budget_exceeded"
    assert float(booked(budget_suite, "tenant-0")["cost_usd"]) == pytest.approx(OPUS_COST, abs=1e-8)
    # Free models still answer: the budget is about money.
    assert ask(http, model="local").status_code == 200


def test_the_global_daily_budget_stops_every_tenant(budget_suite: Suite, http: httpx.Client) -> None:
    set_tenant_budget(http, 0)  # 0: no tenant budget, and it applies to the very next request
    spent = 3 * OPUS_COST
    for _ in range(20):
        reply = ask(http)
        if reply.status_code != 200:
            break
        assert spent < GLOBAL_BUDGET, "answered although the global budget was spent"
        spent += OPUS_COST
    assert spent >= GLOBAL_BUDGET
    assert_budget_refusal(reply, "GOBLIN_DAILY_BUDGET_USD")
    assert ask(http, model="local").status_code == 200


def test_an_api_key_over_its_daily_token_budget_is_refused_even_for_free_models(
    budget_suite: Suite, http: httpx.Client
) -> None:
    key_id = query(budget_suite, "SELECT api_key_id FROM router.routing_requests WHERE api_key_id IS NOT NULL LIMIT 1")[
        0
    ]["api_key_id"]
    used = query(
        budget_suite,
        "SELECT sum(prompt_tokens + completion_tokens) AS n FROM router.routing_requests WHERE api_key_id = $1",
        key_id,
    )[0]["n"]
    query(budget_suite, "UPDATE auth.api_keys SET tokens_per_day = $1 WHERE id = $2", int(used), key_id)
    try:
        time.sleep(0.3)  # past GOBLIN_AUTH_CACHE_TTL_S: the gateway verifies the key again
        assert_budget_refusal(ask(http, model="local"), "token budget")
    finally:
        query(budget_suite, "UPDATE auth.api_keys SET tokens_per_day = NULL WHERE id = $1", key_id)
        time.sleep(0.3)  # past GOBLIN_AUTH_CACHE_TTL_S, so the next test does not meet the old limit


def test_spend_survives_a_redis_that_lost_it(budget_suite: Suite, http: httpx.Client) -> None:
    url = budget_suite.env["REDIS_URL"]
    flush_redis(url)
    client = redis.Redis.from_url(url)
    try:
        # The books (routing_requests) put the day's spending back within a reconcile period.
        total = wait_for(
            lambda: float(client.get(global_spend_key(utc_day(time.time()))) or 0) >= GLOBAL_BUDGET,
            timeout_s=10,
            what="the spend counter restored from routing_requests",
        )
        assert total
    finally:
        client.close()
    assert_budget_refusal(ask(http), "GOBLIN_DAILY_BUDGET_USD")
