"""RouterService with scripted providers: plans, fallbacks, retries, circuit breaking, budgets, cache,
cost in the books."""

from __future__ import annotations

import pytest

from goblin.v1 import common_pb2
from services.common.chat import Message, SamplingParams, Usage
from services.common.context import correlation_id_var
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.principal import Principal, verified_principal_var
from services.router.budget import BudgetStatus
from services.router.cache import ResponseCache
from services.router.catalog import Catalog
from services.router.provider_state import ProviderStates
from services.router.providers.base import CallContext
from services.router.providers.errors import (
    CircuitOpen,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from services.router.service import ChatCall, RetryPolicy, RouterService
from services.router.servicer import context_from_proto
from tests.unit.router.conftest import Break, FakeRedis, ListLedger, Providers, ScriptedProvider, metric

HI = [Message("user", "hello there")]
CTX = CallContext(correlation_id="c", tenant_id="acme", user_hash="u1", api_key_id="k1")
FAST_RETRY = RetryPolicy(retries=2, base_s=0.0, max_s=0.05)


class StaticBudgets:
    """Budgets whose status the test sets; charges are recorded."""

    def __init__(self, status: BudgetStatus | None = None) -> None:
        self.current = status or BudgetStatus()
        self.charges: list[tuple[str, str, float, int]] = []

    async def status(self, context: CallContext) -> BudgetStatus:
        return self.current

    def charge(self, tenant_id: str, api_key_id: str, cost_usd: float, tokens: int) -> None:
        self.charges.append((tenant_id, api_key_id, cost_usd, tokens))


def make(
    catalog: Catalog,
    *providers: ScriptedProvider,
    budgets: StaticBudgets | None = None,
    cache: ResponseCache | None = None,
    failures: int = 3,
) -> tuple[RouterService, ListLedger]:
    ledger = ListLedger()
    service = RouterService(
        catalog,
        Providers(*providers),
        ledger,
        ProviderStates(failure_threshold=failures, cooldown_s=60),
        budgets=budgets or StaticBudgets(),  # type: ignore[arg-type]
        cache=cache,
        retry=FAST_RETRY,
    )
    return service, ledger


def call(model: str = "alpha/big", **kwargs: object) -> ChatCall:
    return ChatCall(model=model, messages=HI, params=kwargs.pop("params", SamplingParams()), context=CTX, **kwargs)  # type: ignore[arg-type]


async def test_an_answer_is_booked_with_its_cost_at_list_prices(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha")
    budgets = StaticBudgets()
    service, ledger = make(catalog, alpha, budgets=budgets)
    before = metric("goblin_router_cost_usd_total", provider="alpha", model="big")
    routed = await service.chat(call())
    # 100 prompt tokens at $3/M + 20 completion tokens at $15/M
    assert routed.cost_usd == pytest.approx(100 * 3 / 1e6 + 20 * 15 / 1e6)
    assert routed.result.text == "alpha answer" and routed.fallback_chain == ()
    row = ledger.rows[-1]
    assert (row.provider, row.model, row.outcome) == ("alpha", "big", "ok")
    assert (row.prompt_tokens, row.completion_tokens) == (100, 20)
    assert row.cost_usd == pytest.approx(0.0006)
    assert (row.tenant_id, row.api_key_id, row.user_hash, row.correlation_id) == ("acme", "k1", "u1", "c")
    assert row.latency_ms is not None and row.latency_ms >= 0
    assert budgets.charges == [("acme", "k1", pytest.approx(0.0006), 120)]
    assert metric("goblin_router_cost_usd_total", provider="alpha", model="big") - before == pytest.approx(0.0006)


async def test_fallback_to_the_next_model_is_counted_and_booked(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "down")] * 3)
    beta = ScriptedProvider("beta")
    service, ledger = make(catalog, alpha, beta)
    before = metric("goblin_router_fallbacks_total", from_provider="alpha", to_provider="beta")
    routed = await service.chat(call(fallbacks=("beta/small",)))
    assert routed.result.provider == "beta"
    assert routed.fallback_chain == ("alpha/big", "beta/small")
    assert len(alpha.calls) == 3  # the first try and two retries
    assert metric("goblin_router_fallbacks_total", from_provider="alpha", to_provider="beta") - before == 1
    assert ledger.rows[-1].fallback_chain == ["alpha/big", "beta/small"]
    assert ledger.rows[-1].provider == "beta"


async def test_retries_stop_at_the_first_success(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "blip")])
    service, _ = make(catalog, alpha)
    before = metric("goblin_router_retries_total", provider="alpha")
    routed = await service.chat(call())
    assert routed.result.provider == "alpha" and len(alpha.calls) == 2
    assert metric("goblin_router_retries_total", provider="alpha") - before == 1


async def test_a_long_retry_after_moves_on_instead_of_waiting(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderRateLimited("alpha", "slow down", retry_after=30)])
    beta = ScriptedProvider("beta")
    service, _ = make(catalog, alpha, beta)
    routed = await service.chat(call(fallbacks=("beta/small",)))
    assert len(alpha.calls) == 1 and routed.result.provider == "beta"


async def test_the_callers_own_errors_are_neither_retried_nor_moved(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderRejected("alpha", "bad request")])
    beta = ScriptedProvider("beta")
    service, ledger = make(catalog, alpha, beta)
    with pytest.raises(ProviderRejected):
        await service.chat(call(fallbacks=("beta/small",)))
    assert len(alpha.calls) == 1 and beta.calls == []
    assert ledger.rows[-1].outcome == "error" and ledger.rows[-1].error_code == "provider_invalid_request"


async def test_when_every_candidate_fails_the_last_error_is_reported(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "down")] * 3)
    beta = ScriptedProvider("beta", script=[ProviderRateLimited("beta", "busy", retry_after=60)])
    service, ledger = make(catalog, alpha, beta)
    with pytest.raises(ProviderRateLimited):
        await service.chat(call(fallbacks=("beta/small",)))
    assert ledger.rows[-1].fallback_chain == ["alpha/big", "beta/small"]


async def test_the_circuit_opens_skips_the_provider_then_probes_and_closes(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "down")] * 3)
    beta = ScriptedProvider("beta")
    service, _ = make(catalog, alpha, beta, failures=3)
    await service.chat(call(fallbacks=("beta/small",)))  # three failures open alpha's circuit
    breaker = service.states.breaker("alpha", "alpha/big")
    assert breaker.state == "open"
    assert metric("goblin_router_circuit_state", provider="alpha", model="alpha/big") == 2
    routed = await service.chat(call(fallbacks=("beta/small",)))
    assert len(alpha.calls) == 3, "an open circuit is not called"
    assert routed.result.provider == "beta"
    assert routed.fallback_chain == ("alpha/big", "beta/small")
    with pytest.raises(CircuitOpen) as info:
        await service.chat(call())
    assert 0 < info.value.retry_after <= 60
    breaker.opened_at -= 61  # the cooldown has passed: the next request is the probe
    routed = await service.chat(call())
    assert routed.result.provider == "alpha"
    assert breaker.state == "closed"
    assert metric("goblin_router_circuit_state", provider="alpha", model="alpha/big") == 0


async def test_a_failed_probe_reopens_the_circuit(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "down")] * 4)
    service, _ = make(catalog, alpha, ScriptedProvider("beta"), failures=3)
    await service.chat(call(fallbacks=("beta/small",)))
    breaker = service.states.breaker("alpha", "alpha/big")
    breaker.opened_at -= 61
    routed = await service.chat(call(fallbacks=("beta/small",)))
    assert len(alpha.calls) == 4, "the probe is not retried"
    assert routed.result.provider == "beta"
    assert breaker.state == "open" and breaker.retry_after() > 59


async def test_one_failing_model_does_not_cut_off_its_providers_other_models(catalog: Catalog) -> None:
    """Circuits are per model deployment: gamma/mid failing opens gamma/mid's only."""
    gamma = ScriptedProvider("gamma", script=[ProviderUnavailable("gamma", "HTTP 500")] * 3)
    service, _ = make(catalog, gamma, ScriptedProvider("alpha"), failures=3)
    with pytest.raises(ProviderUnavailable):
        await service.chat(call("gamma/mid"))  # a try and two retries: three failures open it
    assert service.states.breaker("gamma", "gamma/mid").state == "open"
    assert service.states.breaker("gamma").state == "closed"
    assert (await service.chat(call("gamma/free"))).result.provider == "gamma"
    assert metric("goblin_router_circuit_state", provider="gamma", model="gamma/mid") == 2
    assert metric("goblin_router_circuit_state", provider="gamma", model="gamma/free") == 0
    with pytest.raises(CircuitOpen) as info:
        await service.chat(call("gamma/mid"))
    refusal = info.value
    assert refusal.code == "circuit_open" and 59 <= refusal.retry_after <= 60
    assert refusal.message.startswith("gamma: circuit open for gamma/mid after 3 consecutive failures")
    assert refusal.message.endswith("tried again in 60 s")
    assert [row.name for row in service.provider_states() if row.circuit == "open"] == ["gamma"]


async def test_connection_failures_open_the_provider_wide_circuit_for_every_model(catalog: Catalog) -> None:
    refused = ProviderUnavailable("gamma", "cannot connect to the provider (ClientConnectorError)", provider_wide=True)
    gamma = ScriptedProvider("gamma", script=[refused] * 3)
    service, _ = make(catalog, gamma, ScriptedProvider("alpha"), failures=3)
    with pytest.raises(ProviderUnavailable):
        await service.chat(call("gamma/mid"))
    assert service.states.breaker("gamma").state == "open"
    assert service.states.breaker("gamma", "gamma/mid").consecutive_failures == 0
    for model in ("gamma/mid", "gamma/free"):
        with pytest.raises(CircuitOpen) as info:
            await service.chat(call(model))
        assert "gamma: circuit open for every model" in info.value.message
        assert "tried again in 60 s" in info.value.message
    assert metric("goblin_router_circuit_state", provider="gamma", model="*") == 2
    assert len(gamma.calls) == 3, "neither model is called while connections fail"


async def test_a_connection_failure_during_a_models_probe_frees_the_probe(catalog: Catalog) -> None:
    gamma = ScriptedProvider("gamma", script=[ProviderUnavailable("gamma", "HTTP 500")] * 3)
    service, _ = make(catalog, gamma, failures=3)
    with pytest.raises(ProviderUnavailable):
        await service.chat(call("gamma/mid"))
    deployment = service.states.breaker("gamma", "gamma/mid")
    deployment.opened_at -= 61  # its cooldown is over: the next call is its probe
    gamma.script = [ProviderUnavailable("gamma", "refused", provider_wide=True)]
    with pytest.raises(ProviderUnavailable):
        await service.chat(call("gamma/mid"))
    assert deployment.state == "half_open" and deployment.allow(), "the next caller may probe the model"


async def test_a_429s_long_retry_after_cools_the_deployment_at_least_that_long(catalog: Catalog) -> None:
    """Longer than a retry would wait: the next candidate answers, and the model is not asked again
    before the provider said, after a single failure."""
    gamma = ScriptedProvider("gamma", script=[ProviderRateLimited("gamma", "HTTP 429", retry_after=90)])
    service, _ = make(catalog, gamma, ScriptedProvider("alpha"), failures=3)
    routed = await service.chat(call("gamma/mid", fallbacks=("alpha/big",)))
    assert routed.result.provider == "alpha" and len(gamma.calls) == 1
    breaker = service.states.breaker("gamma", "gamma/mid")
    assert breaker.state == "open" and 89 <= breaker.retry_after() <= 90
    with pytest.raises(CircuitOpen) as info:
        await service.chat(call("gamma/mid"))
    assert info.value.retry_after >= 89
    assert "gamma: circuit open for gamma/mid after the provider asked to wait 90 s" in info.value.message
    assert (await service.chat(call("gamma/free"))).result.provider == "gamma", "its sibling still serves"
    breaker.opened_at -= 61
    with pytest.raises(CircuitOpen):
        await service.chat(call("gamma/mid")), "the usual 60 s cooldown is not enough"


async def test_a_stream_that_breaks_midway_counts_against_its_model_only(catalog: Catalog) -> None:
    gamma = ScriptedProvider("gamma", script=[Break(1, ProviderUnavailable("gamma", "reset"))])
    service, _ = make(catalog, gamma, failures=1)
    with pytest.raises(ProviderUnavailable):
        async for _ in service.stream(call("gamma/mid", fallbacks=("gamma/free",))):
            pass
    assert len(gamma.calls) == 1, "a stream that has started is not sent again"
    assert service.states.breaker("gamma", "gamma/mid").state == "open"
    assert service.states.breaker("gamma").state == "closed"


async def test_a_stream_falls_back_before_its_first_token(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[ProviderUnavailable("alpha", "down")] * 3)
    beta = ScriptedProvider("beta")
    service, ledger = make(catalog, alpha, beta)
    got = [(route.model_id, delta) async for route, delta in service.stream(call(fallbacks=("beta/small",)))]
    assert "".join(d.text for _, d in got) == "beta says hi"
    assert {m for m, _ in got} == {"beta/small"}
    assert got[-1][1].usage == Usage(100, 20)
    row = ledger.rows[-1]
    assert row.stream and row.outcome == "ok" and row.fallback_chain == ["alpha/big", "beta/small"]
    assert row.ttft_ms is not None


async def test_a_stream_that_emitted_tokens_is_never_resent(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha", script=[Break(after=2, error=ProviderUnavailable("alpha", "reset"))])
    beta = ScriptedProvider("beta")
    service, ledger = make(catalog, alpha, beta)
    seen = []
    with pytest.raises(ProviderUnavailable):
        async for _, delta in service.stream(call(fallbacks=("beta/small",))):
            seen.append(delta.text)
    assert seen == ["alpha", " says"]
    assert beta.calls == [], "no fallback after tokens reached the caller"
    assert alpha.closed_streams == 1
    row = ledger.rows[-1]
    assert row.outcome == "error" and row.completion_tokens > 0 and row.cost_usd > 0  # billed estimate


async def test_a_caller_that_leaves_mid_stream_closes_the_provider_stream(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha")
    service, ledger = make(catalog, alpha)
    stream = service.stream(call())
    async for _ in stream:
        break
    await stream.aclose()
    assert alpha.closed_streams == 1
    assert ledger.rows[-1].outcome == "cancelled"


async def test_unconfigured_providers_are_not_routable_and_say_so(catalog: Catalog) -> None:
    service, _ = make(catalog, ScriptedProvider("alpha", configured=False), ScriptedProvider("beta"))
    with pytest.raises(ProviderNotConfigured, match="set ALPHA_API_KEY"):
        await service.chat(call())
    routed = await service.chat(call(fallbacks=("beta/small",)))
    assert routed.result.provider == "beta"
    assert [m.id for m in await service.list_models() if m.provider == "alpha"] == []


async def test_unknown_models_and_providers(catalog: Catalog) -> None:
    service, _ = make(catalog, ScriptedProvider("alpha"))
    with pytest.raises(NotFound, match="no provider"):
        await service.chat(call("nosuch/model"))
    with pytest.raises(NotFound, match="not in the catalog"):
        await service.chat(call("alpha/unlisted"))
    with pytest.raises(InvalidArgument, match="does not support chat"):
        await service.chat(call("alpha/embed"))
    with pytest.raises(InvalidArgument, match="unknown routing policy"):
        await service.chat(call(policy="yolo"))


async def test_a_prompt_that_cannot_fit_skips_to_a_model_with_room(catalog: Catalog) -> None:
    long = [Message("user", "word " * 2000)]  # ~2500 tokens: alpha/big has a 1000-token context
    beta = ScriptedProvider("beta")
    service, _ = make(catalog, ScriptedProvider("alpha"), beta)
    routed = await service.chat(ChatCall("alpha/big", long, SamplingParams(), CTX, fallbacks=("beta/small",)))
    assert routed.result.provider == "beta"
    with pytest.raises(InvalidArgument, match="does not fit"):
        await service.chat(ChatCall("alpha/big", long, SamplingParams(), CTX))


async def test_policies_order_an_alias_group(catalog: Catalog) -> None:
    alpha, beta = ScriptedProvider("alpha"), ScriptedProvider("beta")
    service, ledger = make(catalog, alpha, beta, ScriptedProvider("gamma"))
    assert (await service.chat(call("smart"))).result.provider == "alpha"  # explicit: catalog order
    assert (await service.chat(call("smart", policy="cheapest"))).result.provider == "beta"
    assert (await service.chat(call("smart", policy="priority"))).result.provider == "beta"  # priority 10 < 20
    assert ledger.rows[-1].policy == "priority"
    routed = await service.chat(call("cheap"))  # a named policy, asked for as the model
    assert routed.result.model == "beta/small" and ledger.rows[-1].policy == "cheap"
    routed = await service.chat(call("anything", policy="cheap"))
    assert routed.result.model == "beta/small"


async def test_fastest_prefers_the_lower_recent_latency(catalog: Catalog) -> None:
    service, _ = make(catalog, ScriptedProvider("alpha"), ScriptedProvider("beta"))
    for _ in range(5):
        service.states.success("alpha", "alpha/big", 0.05)
        service.states.success("beta", "beta/small", 0.40)
    assert (await service.chat(call("smart", policy="fastest"))).result.provider == "alpha"
    for _ in range(50):
        service.states.success("alpha", "alpha/big", 0.90)
    assert (await service.chat(call("smart", policy="fastest"))).result.provider == "beta"


async def test_over_the_dollar_budget_only_free_models_answer(catalog: Catalog) -> None:
    spent = BudgetStatus(
        money=False, scope="tenant", reason="tenant 'acme' has spent its daily budget", retry_after=3600
    )
    gamma = ScriptedProvider("gamma")
    alpha = ScriptedProvider("alpha")
    service, ledger = make(catalog, alpha, gamma, budgets=StaticBudgets(spent))
    before = metric("goblin_router_budget_refusals_total", scope="tenant")
    with pytest.raises(ResourceExhausted) as info:
        await service.chat(call())
    assert info.value.code == "budget_exceeded" and info.value.retry_after == 3600
    assert "tenant 'acme'" in info.value.message
    assert alpha.calls == [], "refused before calling the provider"
    assert ledger.rows[-1].outcome == "budget_exceeded"
    assert metric("goblin_router_budget_refusals_total", scope="tenant") - before == 1
    routed = await service.chat(call(fallbacks=("gamma/free",)))
    assert routed.result.model == "gamma/free" and routed.cost_usd == 0


async def test_over_the_token_budget_nothing_answers(catalog: Catalog) -> None:
    spent = BudgetStatus(money=False, tokens=False, scope="api_key", reason="tokens used up", retry_after=10)
    gamma = ScriptedProvider("gamma")
    service, _ = make(catalog, gamma, budgets=StaticBudgets(spent))
    with pytest.raises(ResourceExhausted, match="tokens used up"):
        await service.chat(call("gamma/free"))
    with pytest.raises(ResourceExhausted):
        async for _ in service.stream(call("gamma/free")):
            pass
    assert gamma.calls == []


async def test_identical_deterministic_requests_are_answered_from_the_cache(catalog: Catalog) -> None:
    redis = FakeRedis()
    alpha = ScriptedProvider("alpha")
    budgets = StaticBudgets()
    service, ledger = make(catalog, alpha, budgets=budgets, cache=ResponseCache(lambda: redis, 60))
    zero = SamplingParams(temperature=0, max_tokens=10)
    before = metric("goblin_router_cache_hits_total")
    first = await service.chat(call(params=zero))
    await service.aclose()  # the cache write happens off the request path
    second = await service.chat(call(params=zero))
    assert len(alpha.calls) == 1
    assert second.cached and second.result.text == first.result.text and second.result.id != first.result.id
    assert second.result.usage == first.result.usage and second.cost_usd == 0
    assert metric("goblin_router_cache_hits_total") - before == 1
    assert ledger.rows[-1].outcome == "cache_hit" and ledger.rows[-1].cost_usd == 0
    assert len(budgets.charges) == 1, "a cache hit costs nothing"
    assert list(redis.ttl.values()) == [60]
    await service.chat(call(params=zero, bypass_cache=True))
    await service.chat(call(params=SamplingParams(temperature=0.5, max_tokens=10)))
    await service.chat(call(params=SamplingParams(max_tokens=10)))
    assert len(alpha.calls) == 4, "bypass, temperature > 0 and default temperature all reach the provider"
    redis.down = True
    await service.chat(call(params=zero))  # a broken cache is not a broken router
    assert len(alpha.calls) == 5


async def test_catalog_default_params_fill_what_the_request_leaves_out() -> None:
    from tests.unit.router.conftest import TEST_CATALOG, catalog_from

    data = {
        **TEST_CATALOG,
        "models": {"alpha/big": {"default_params": {"temperature": 0.1, "max_tokens": 64}}},
    }
    alpha = ScriptedProvider("alpha")
    service, _ = make(catalog_from(data), alpha)
    await service.chat(call(params=SamplingParams(max_tokens=5)))
    assert alpha.calls[-1][1] == SamplingParams(max_tokens=5, temperature=0.1)


async def test_embeddings_are_booked_and_never_fall_back(catalog: Catalog) -> None:
    alpha = ScriptedProvider("alpha")
    service, ledger = make(catalog, alpha)
    result = await service.embed("alpha/embed", ["a", "b"], CTX)
    assert result.dimensions == 2
    row = ledger.rows[-1]
    assert row.outcome == "ok" and row.prompt_tokens == 2 and row.cost_usd == pytest.approx(2 * 0.02 / 1e6)
    with pytest.raises(InvalidArgument):
        await service.embed("alpha/big", ["a"], CTX)


def test_the_call_context_takes_the_correlation_id_and_the_verified_principal_of_the_grpc_call() -> None:
    # What the server interceptors do for each call: the correlation id and the verified principal.
    token = correlation_id_var.set("from-metadata")
    verified = verified_principal_var.set(Principal(user_id="u", tenant_id="acme", key_tokens_per_day=10))
    try:
        ctx = context_from_proto(common_pb2.RequestContext(client_ip="10.0.0.1"))
    finally:
        verified_principal_var.reset(verified)
        correlation_id_var.reset(token)
    assert (ctx.correlation_id, ctx.tenant_id, ctx.key_tokens_per_day) == ("from-metadata", "acme", 10)
    assert context_from_proto(common_pb2.RequestContext()).tenant_id == "", "no principal: nobody"
    assert "correlation_id" not in common_pb2.RequestContext.DESCRIPTOR.fields_by_name
