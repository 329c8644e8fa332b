"""The router end to end: the openai SDK -> gateway (HTTPS) -> router -> a fake of every provider's real
HTTP API (goblin_tools/fakes/providers.py), checking both what the client gets and what each provider received.

Covers each provider unary and streaming, a catalog-declared OpenAI-compatible provider, an unconfigured
one, fallbacks and their metric, retries with Retry-After, the circuit breaker opening and closing,
typed provider errors, a stream broken midway, the response cache, embeddings, the books and their cost.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import httpx
import openai
import pytest
import redis

from goblin.v1 import router_pb2, router_pb2_grpc
from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, catalog_suite
from services.router.catalog import build_catalog, load_file_layers
from tests.integration.principals import as_caller

SYSTEM = "You are terse."
PROMPT_WORDS = 8  # the fake counts words: "You are terse." + "Say hello to the tests."
CATALOG = build_catalog(load_file_layers(None))

PROVIDERS = {
    # tag: (model id, path the provider is called on)
    "openai": ("openai/gpt-4o-mini", "/openai/v1/chat/completions"),
    "anthropic": ("anthropic/claude-haiku-4-5", "/anthropic/v1/messages"),
    "gemini": ("gemini/gemini-2.5-flash", "/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
    "deepseek": ("deepseek/deepseek-chat", "/deepseek/chat/completions"),
    "grok": ("grok/grok-3-mini", "/grok/v1/chat/completions"),
    "moonshot": ("moonshot/kimi-k2-0905-preview", "/moonshot/v1/chat/completions"),
    "siliconflow": ("siliconflow/Qwen/Qwen3-8B", "/siliconflow/v1/chat/completions"),
}


def messages(text: str = "Say hello to the tests.") -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def answer(tag: str, model_id: str, words: int | None = None) -> str:
    pieces = f"Hello from the fake {tag} model {model_id.split('/', 1)[1]}".split(" ")
    return " ".join(pieces[:words] if words else pieces)


# -- helpers shared with test_router_budget.py --------------------------------------------------------


def redis_db(url: str, db: int) -> str:
    """``url`` selecting Redis database ``db``: suites sharing the test Redis keep their budgets apart."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join([q for q in parts.query.split("&") if q and not q.startswith("db=")] + [f"db={db}"])
        return f"unix://{parts.path}?{query}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def query(suite: Suite, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:  # callers may be inside the session's event loop
        return pool.submit(asyncio.run, run()).result()


def wait_for(check: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def booked(suite: Suite, correlation_id: str) -> asyncpg.Record:
    rows = wait_for(
        lambda: query(suite, "SELECT * FROM router.routing_requests WHERE correlation_id = $1", correlation_id),
        what=f"the routing_requests row of {correlation_id}",
    )
    assert len(rows) == 1
    return rows[0]


def router_metric(suite: Suite, name: str, **labels: str) -> float:
    text = httpx.get(suite.metrics_url("router"), timeout=5).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def sdk(suite: Suite, api_key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key=api_key or suite.admin_key,
        http_client=httpx.Client(verify=suite.ssl_context(), timeout=60),
        max_retries=0,
    )


def router_stub(suite: Suite) -> tuple[grpc.Channel, router_pb2_grpc.RouterStub]:
    channel = suite.grpc_channel("router")
    return channel, router_pb2_grpc.RouterStub(channel)


def provider_state(suite: Suite, name: str) -> router_pb2.ProviderState:
    channel, stub = router_stub(suite)
    with channel:
        reply = stub.ListProviders(router_pb2.ListProvidersRequest(), timeout=5, metadata=as_caller(suite, "u1"))
    return next(p for p in reply.providers if p.name == name)


SUITE_ENV = {
    "GOBLIN_ROUTER_RETRIES": "1",
    "GOBLIN_ROUTER_RETRY_BASE_S": "0.01",
    "GOBLIN_ROUTER_RETRY_MAX_S": "2",
    "GOBLIN_ROUTER_CIRCUIT_FAILURES": "3",
    "GOBLIN_ROUTER_CIRCUIT_COOLDOWN_S": "4",
    "GOBLIN_PROVIDER_TIMEOUT_S": "2",
    "GOBLIN_BUDGET_SYNC_S": "0.1",
    "GOBLIN_RATE_LIMIT_CHAT": "10000/minute",
    "GOBLIN_RATE_LIMIT_DEFAULT": "10000/minute",
}


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def router_suite(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
    redis_url: str,
    fake: FakeProviders,
) -> Iterator[Suite]:
    url = redis_db(redis_url, 4)
    flush_redis(url)
    with catalog_suite(
        tmp_path_factory.mktemp("router"),
        f"""
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{fake.port}/acme/v1
  nokey:
    kind: openai_compatible
    base_url: http://127.0.0.1:{fake.port}/nokey/v1
models:
  acme/acme-chat:
    aliases: [house]
    context_length: 8000
    input_price_per_mtok: 1.0
    output_price_per_mtok: 2.0
  nokey/some-model: {{}}
""",
        DATABASE_URL=new_database(),
        REDIS_URL=url,
        ACME_API_KEY=fake.key("acme"),
        LLM_CACHE_TTL="60",
        GOBLIN_DAILY_BUDGET_USD="1000",
        **SUITE_ENV,
        **fake.env(),
    ) as suite:
        yield suite


@pytest.fixture(scope="module")
def client(router_suite: Suite) -> openai.OpenAI:
    return sdk(router_suite)


# -- every provider ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(PROVIDERS))
def test_each_provider_answers_through_the_gateway(
    tag: str, client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    model_id, path = PROVIDERS[tag]
    correlation = f"unary-{tag}"
    fake.reset(tag)
    reply = client.chat.completions.create(
        model=model_id,
        messages=messages(),
        max_tokens=5,
        temperature=0.5,
        extra_headers={"X-Correlation-ID": correlation},
    )
    assert reply.model == model_id
    assert reply.choices[0].message.content == answer(tag, model_id, 5)
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (PROMPT_WORDS, 5)

    [received] = fake.requests(tag)
    assert received.path == path
    body, headers = received.body, received.headers
    key = fake.key(tag)
    if tag == "anthropic":
        assert headers["x-api-key"] == key and headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in headers
        assert body["system"] == SYSTEM
        assert body["messages"] == [{"role": "user", "content": "Say hello to the tests."}]
        assert body["max_tokens"] == 5 and body["temperature"] == 0.5 and "stream" not in body
    elif tag == "gemini":
        assert headers["x-goog-api-key"] == key and "key" not in received.query
        assert body["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello to the tests."}]}]
        assert body["generationConfig"] == {"maxOutputTokens": 5, "temperature": 0.5}
    else:
        assert headers["authorization"] == f"Bearer {key}"
        assert body["model"] == model_id.split("/", 1)[1]
        assert body["messages"] == messages()
        assert body["max_completion_tokens" if tag == "openai" else "max_tokens"] == 5
        assert "stream" not in body

    row = booked(router_suite, correlation)
    price = CATALOG.models[model_id]
    expected = (PROMPT_WORDS * price.input_price_per_mtok + 5 * price.output_price_per_mtok) / 1e6
    assert (row["provider"], row["model"], row["outcome"]) == (tag, model_id.split("/", 1)[1], "ok")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_WORDS, 5)
    assert float(row["cost_usd"]) == pytest.approx(expected, abs=1e-8)
    assert row["user_hash"] and row["user_hash"] != "" and row["tenant_id"] == "default"


@pytest.mark.parametrize("tag", list(PROVIDERS))
def test_each_provider_streams_through_the_gateway(tag: str, client: openai.OpenAI, fake: FakeProviders) -> None:
    model_id, path = PROVIDERS[tag]
    fake.reset(tag)
    stream = client.chat.completions.create(
        model=model_id, messages=messages(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer(tag, model_id)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 7, "one chunk per token, as the provider sent them"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_WORDS, 7)
    assert {c.model for c in chunks} == {model_id}

    [received] = fake.requests(tag)
    if tag == "anthropic":
        assert received.path == path and received.body["stream"] is True
    elif tag == "gemini":
        assert received.path == path.replace(":generateContent", ":streamGenerateContent")
        assert received.query == {"alt": "sse"}
    else:
        assert received.path == path
        assert received.body["stream"] is True
        assert received.body["stream_options"] == {"include_usage": True}


def test_a_catalog_declared_provider_is_routable_and_one_without_a_key_says_so(
    client: openai.OpenAI, fake: FakeProviders
) -> None:
    reply = client.chat.completions.create(model="house", messages=messages(), max_tokens=3)
    assert reply.model == "acme/acme-chat" and reply.choices[0].message.content == "Hello from the"
    [received] = fake.requests("acme")
    assert received.path == "/acme/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {fake.key('acme')}"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="nokey/some-model", messages=messages(), max_tokens=3)
    assert refused.value.response.json()["error"] == "provider_not_configured"
    assert "NOKEY_API_KEY" in refused.value.response.json()["message"]
    assert fake.requests("nokey") == []
    models = {m.id for m in client.models.list()}
    assert {"acme/acme-chat", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-pro"} <= models
    assert "nokey/some-model" not in models
    assert any(m.startswith("local/") for m in models)


def test_embeddings_from_a_provider(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    reply = client.embeddings.create(model="openai/text-embedding-3-small", input=["the cat sat", "a dog"])
    assert [len(d.embedding) for d in reply.data] == [8, 8]
    assert reply.usage.prompt_tokens == 5
    [received] = fake.requests("openai")
    assert received.path == "/openai/v1/embeddings"
    assert received.body == {
        "model": "text-embedding-3-small",
        "input": ["the cat sat", "a dog"],
        "encoding_format": "float",
    }


# -- failures ----------------------------------------------------------------------------------------


def test_a_failing_provider_falls_back_to_the_next_and_the_fallback_is_counted(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("openai")
    fake.reset("anthropic")
    fake.fail("openai", 500, times=2)
    before = router_metric(
        router_suite, "goblin_router_fallbacks_total", from_provider="openai", to_provider="anthropic"
    )
    reply = client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=messages(),
        max_tokens=4,
        extra_body={"goblin": {"fallbacks": ["anthropic/claude-haiku-4-5"]}},
        extra_headers={"X-Correlation-ID": "fallback-1"},
    )
    assert reply.model == "anthropic/claude-haiku-4-5"
    assert len(fake.requests("openai")) == 2, "one try and one retry"
    assert len(fake.requests("anthropic")) == 1
    after = router_metric(
        router_suite, "goblin_router_fallbacks_total", from_provider="openai", to_provider="anthropic"
    )
    assert after - before == 1
    row = booked(router_suite, "fallback-1")
    assert row["fallback_chain"] == ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]
    assert row["provider"] == "anthropic" and row["outcome"] == "ok"


def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_good_probe(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("deepseek")
    fake.fail("deepseek", 503, times=None)
    ask = {"model": "deepseek/deepseek-chat", "messages": messages(), "max_tokens": 2}
    grok = {"goblin": {"fallbacks": ["grok/grok-3-mini"]}}
    for _ in range(2):  # 2 + 1 failures (each request tries, retries once; the third failure opens it)
        assert client.chat.completions.create(**ask, extra_body=grok).model == "grok/grok-3-mini"
    assert len(fake.requests("deepseek")) == 3
    state = provider_state(router_suite, "deepseek")
    assert state.circuit == "open" and state.consecutive_failures == 3 and state.configured
    # HTTP 503s name a model: its deployment's circuit opens, not the provider-wide one.
    deployment = {"provider": "deepseek", "model": "deepseek/deepseek-chat"}
    assert router_metric(router_suite, "goblin_router_circuit_state", **deployment) == 2
    assert router_metric(router_suite, "goblin_router_circuit_state", provider="deepseek", model="*") == 0
    wait_for(
        lambda: query(
            router_suite,
            "SELECT 1 FROM router.provider_metrics WHERE provider = 'deepseek' "
            "AND model = 'deepseek/deepseek-chat' AND circuit_state = 'open' AND open_until > opened_at",
        ),
        what="the deployment's open circuit in provider_metrics",
    )

    reply = client.chat.completions.create(**ask, extra_body=grok, extra_headers={"X-Correlation-ID": "circuit-1"})
    assert reply.model == "grok/grok-3-mini"
    assert len(fake.requests("deepseek")) == 3, "an open circuit is not called"
    assert booked(router_suite, "circuit-1")["fallback_chain"] == [
        "deepseek/deepseek-chat",
        "grok/grok-3-mini",
    ]
    with httpx.Client(base_url=router_suite.gateway_url, verify=router_suite.ssl_context()) as http:
        refused = http.post(
            "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {router_suite.admin_key}"}
        )
    assert refused.status_code == 503 and refused.json()["error"] == "circuit_open"
    assert 1 <= int(refused.headers["Retry-After"]) <= 4
    message = refused.json()["message"]
    assert message.startswith("deepseek: circuit open for deepseek/deepseek-chat after 3 consecutive failures")
    assert "tried again in" in message and "router" not in message

    fake.reset("deepseek")  # the provider recovers; after the cooldown one probe goes through
    time.sleep(4.1)
    assert client.chat.completions.create(**ask).model == "deepseek/deepseek-chat"
    assert provider_state(router_suite, "deepseek").circuit == "closed"
    assert router_metric(router_suite, "goblin_router_circuit_state", provider="deepseek") == 0
    wait_for(
        lambda: query(
            router_suite,
            "SELECT 1 FROM router.provider_metrics WHERE provider = 'deepseek' AND model = '' "
            "AND circuit_state = 'closed' AND failure_count >= 3 AND success_count >= 1",
        ),
        what="the books in provider_metrics",
    )
    wait_for(
        lambda: query(
            router_suite,
            "SELECT 1 FROM router.provider_metrics WHERE model = 'deepseek/deepseek-chat' "
            "AND circuit_state = 'closed' AND opened_at IS NULL",
        ),
        what="the deployment's closed circuit in provider_metrics",
    )


def test_a_short_retry_after_is_waited_for_and_retried(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("moonshot")
    fake.fail("moonshot", 429, times=1, retry_after="1")
    before = router_metric(router_suite, "goblin_router_retries_total", provider="moonshot")
    started = time.monotonic()
    reply = client.chat.completions.create(model="moonshot/kimi-k2-0905-preview", messages=messages(), max_tokens=2)
    assert reply.choices[0].message.content == "Hello from"
    assert time.monotonic() - started >= 1.0
    assert len(fake.requests("moonshot")) == 2
    assert router_metric(router_suite, "goblin_router_retries_total", provider="moonshot") - before == 1


def test_a_provider_that_does_not_answer_in_time_is_retried(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("siliconflow")
    fake.slow("siliconflow", 3.0, times=1)  # longer than GOBLIN_PROVIDER_TIMEOUT_S
    before = router_metric(
        router_suite, "goblin_router_provider_errors_total", provider="siliconflow", code="provider_timeout"
    )
    started = time.monotonic()
    reply = client.chat.completions.create(model="siliconflow/Qwen/Qwen3-8B", messages=messages(), max_tokens=2)
    assert reply.choices[0].message.content == "Hello from"
    assert time.monotonic() - started >= 2.0
    assert len(fake.requests("siliconflow")) == 2
    after = router_metric(
        router_suite, "goblin_router_provider_errors_total", provider="siliconflow", code="provider_timeout"
    )
    assert after - before == 1


def test_provider_errors_reach_the_client_typed(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("grok")
    fake.fail("grok", 429, times=1, retry_after="60")
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="grok/grok-3-mini", messages=messages(), max_tokens=2)
    assert limited.value.response.json()["error"] == "provider_rate_limited"
    assert limited.value.response.headers["Retry-After"] == "60"
    assert len(fake.requests("grok")) == 1, "a long Retry-After is not waited for"
    # ... but honoured: the model cools for the minute the provider asked for, and says so.
    with pytest.raises(openai.InternalServerError) as cooling:
        client.chat.completions.create(model="grok/grok-3-mini", messages=messages(), max_tokens=2)
    assert cooling.value.status_code == 503 and cooling.value.response.json()["error"] == "circuit_open"
    assert cooling.value.response.json()["message"].startswith(
        "grok: circuit open for grok/grok-3-mini after the provider asked to wait 60 s; tried again in"
    )
    assert 55 <= int(cooling.value.response.headers["Retry-After"]) <= 60
    assert len(fake.requests("grok")) == 1, "a cooling model is not called"

    fake.malformed("siliconflow")
    with pytest.raises(openai.InternalServerError) as garbled:
        client.chat.completions.create(model="siliconflow/Qwen/Qwen3-8B", messages=messages(), max_tokens=2)
    assert garbled.value.status_code == 503 and garbled.value.response.json()["error"] == "provider_bad_response"

    good_key = fake.keys.get("grok")
    fake.keys["grok"] = "rotated-elsewhere"
    try:
        with pytest.raises(openai.InternalServerError) as denied:  # its sibling is not held back by it
            client.chat.completions.create(model="grok/grok-4", messages=messages(), max_tokens=2)
    finally:
        if good_key is None:
            del fake.keys["grok"]
        else:
            fake.keys["grok"] = good_key
    assert denied.value.response.json()["error"] == "provider_auth_failed"
    assert "test-key" not in denied.value.response.json()["message"]


def test_a_stream_that_broke_after_tokens_is_not_resent(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("gemini")
    fake.reset("anthropic")
    fake.break_stream("gemini", after_tokens=2)
    stream = client.chat.completions.create(
        model="gemini/gemini-2.5-flash",
        messages=messages(),
        stream=True,
        extra_body={"goblin": {"fallbacks": ["anthropic/claude-haiku-4-5"]}},
        extra_headers={"X-Correlation-ID": "broken-stream-1"},
    )
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == "Hello from"
    assert fake.requests("anthropic") == [], "tokens already reached the client: no fallback"
    row = booked(router_suite, "broken-stream-1")
    assert row["outcome"] == "error" and row["provider"] == "gemini" and row["completion_tokens"] > 0


# -- cache and books ---------------------------------------------------------------------------------


def test_identical_temperature_zero_requests_hit_the_cache(
    client: openai.OpenAI, fake: FakeProviders, router_suite: Suite
) -> None:
    fake.reset("gemini")
    ask = {
        "model": "gemini/gemini-2.5-flash",
        "messages": messages("Cache me."),
        "max_tokens": 4,
        "temperature": 0,
    }
    before = router_metric(router_suite, "goblin_router_cache_hits_total")
    first = client.chat.completions.create(**ask)
    cache = redis.Redis.from_url(router_suite.env["REDIS_URL"])
    try:  # the answer is stored off the request path
        wait_for(lambda: cache.keys("goblin:router:cache:v1:*"), what="the cached answer")
    finally:
        cache.close()
    second = client.chat.completions.create(**ask, extra_headers={"X-Correlation-ID": "cache-hit-1"})
    assert len(fake.requests("gemini")) == 1, "the second answer came from the cache"
    assert router_metric(router_suite, "goblin_router_cache_hits_total") - before == 1
    assert second.choices[0].message.content == first.choices[0].message.content == "Hello from the fake"
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert second.id != first.id
    row = booked(router_suite, "cache-hit-1")
    assert row["outcome"] == "cache_hit" and float(row["cost_usd"]) == 0
    client.chat.completions.create(**ask, extra_headers={"Cache-Control": "no-cache"})
    assert len(fake.requests("gemini")) == 2, "Cache-Control: no-cache bypasses the cache"
    client.chat.completions.create(**{**ask, "temperature": 0.7})
    assert len(fake.requests("gemini")) == 3, "only temperature 0 is cached"


def test_usage_report_and_metrics(router_suite: Suite, client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("moonshot")
    fake.fail("moonshot", 503, times=2)
    client.chat.completions.create(
        model="moonshot/kimi-k2-0905-preview",
        messages=messages(),
        max_tokens=2,
        extra_body={"goblin": {"fallbacks": ["anthropic/claude-haiku-4-5"]}},
    )
    client.chat.completions.create(model="anthropic/claude-haiku-4-5", messages=messages(), max_tokens=2)
    channel, stub = router_stub(router_suite)

    def admin() -> tuple[tuple[str, str]]:
        return as_caller(router_suite, "admin-1", role="admin", scopes=("*",))

    def report() -> router_pb2.UsageReport:
        return stub.GetUsage(router_pb2.UsageRequest(), timeout=5, metadata=admin())

    with channel:

        def settled() -> router_pb2.UsageReport | None:
            r = report()
            rows = query(router_suite, "SELECT count(*) AS n FROM router.routing_requests WHERE tenant_id = 'default'")
            return r if r.fallbacks >= 1 and r.requests >= 2 and r.requests == rows[0]["n"] else None

        usage = wait_for(settled, what="the day's usage")
        assert usage.cost_usd > 0 and usage.budget_usd == 1000 and usage.fallbacks >= 1
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
        everyone = stub.GetUsage(router_pb2.UsageRequest(tenant_id="*"), timeout=5, metadata=admin())
        assert everyone.requests >= usage.requests
        with pytest.raises(grpc.RpcError) as denied:
            # A key with every scope is not an admin: the role is the principal's, signed.
            stub.GetUsage(
                router_pb2.UsageRequest(tenant_id="*"),
                timeout=5,
                metadata=as_caller(router_suite, "u", "a", scopes=("*",)),
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    total = query(router_suite, "SELECT sum(cost_usd) AS usd FROM router.routing_requests WHERE tenant_id = 'default'")
    total = total[0]["usd"]
    assert float(total) == pytest.approx(usage.cost_usd, rel=1e-6)
    assert router_metric(router_suite, "goblin_router_cost_usd_total", provider="openai", model="gpt-4o-mini") > 0
    assert router_metric(router_suite, "provider_latency_seconds_count", provider="anthropic", operation="chat") >= 1
    assert router_metric(router_suite, "goblin_router_overhead_seconds_count", operation="chat") > 0


# -- the books survive the router's death (last in the module: it kills the router) ------------------


def test_no_answered_request_is_missing_from_the_books_after_a_sigkill(
    router_suite: Suite, client: openai.OpenAI
) -> None:
    """The ledger row is journaled before the answer leaves the router; killed right after answering,
    the next router writes what the dead one had not, once each."""
    run = uuid.uuid4().hex[:8]
    answered = []
    for n in range(12):
        correlation = f"sigkill-{run}-{n}"
        if n % 3 == 2:
            stream = client.chat.completions.create(
                model="house", messages=messages(), stream=True, extra_headers={"X-Correlation-ID": correlation}
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            reply = client.chat.completions.create(
                model="house", messages=messages(), extra_headers={"X-Correlation-ID": correlation}
            )
            assert reply.choices[0].message.content
        answered.append(correlation)
    router_suite.service_process("router").kill()  # within milliseconds of the last answer
    router_suite.wait_ready(timeout_s=60)

    def all_booked() -> list[asyncpg.Record]:
        rows = query(
            router_suite,
            "SELECT correlation_id FROM router.routing_requests WHERE correlation_id = ANY($1::text[])",
            answered,
        )
        return rows if len(rows) >= len(answered) else []

    rows = wait_for(all_booked, timeout_s=30, what="every answered request in the books")
    assert sorted(r["correlation_id"] for r in rows) == sorted(answered)  # each once
