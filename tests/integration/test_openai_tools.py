"""Issue 15 end to end on the OpenAI-compatible family: the official ``openai`` SDK -> gateway -> router
-> the fake providers' real wire format (goblin_tools/fakes/openai_chat.py checks what it receives).

Two-turn tool conversations unary and streamed (the SDK's stream helper reassembles the fragments),
legacy functions, ``parse()`` with a pydantic model, image parts, logprobs, ``n``, the legacy
``/v1/completions``, capability refusals and a policy that skips incapable models; and bad input (an
invalid tool schema, a tool message answering nothing, huge or malformed data URLs) refused with a 400
before anything reaches a provider.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import jsonschema
import openai
import pydantic
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, catalog_suite
from tests.integration.test_router import SUITE_ENV, flush_redis, redis_db, sdk

FAMILY = {
    "openai": "openai/gpt-4o-mini",
    "deepseek": "deepseek/deepseek-chat",
    "grok": "grok/grok-3-mini",
    "moonshot": "moonshot/kimi-k2-0905-preview",
    "siliconflow": "siliconflow/Qwen/Qwen3-8B",
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()


class Forecast(pydantic.BaseModel):
    city: str
    temperature_c: float
    sunny: bool
    tags: list[str]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def tools_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> Iterator[Suite]:
    url = redis_db(redis_url, 6)
    flush_redis(url)
    # acme: an OpenAI-compatible provider whose model declares no capabilities beyond chat.
    with catalog_suite(
        tmp_path_factory.mktemp("tools"),
        f"""
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{fake.port}/acme/v1
models:
  acme/plain:
    context_length: 8000
    input_price_per_mtok: 0.01
    output_price_per_mtok: 0.01
policies:
  thrifty:
    strategy: cheapest
    models: [acme/plain, moonshot/moonshot-v1-32k, openai/gpt-4.1]
""",
        DATABASE_URL=new_database(),
        REDIS_URL=url,
        ACME_API_KEY=fake.key("acme"),
        **SUITE_ENV,
        **fake.env(),
    ) as suite:
        yield suite


@pytest.fixture(scope="module")
def client(tools_suite: Suite) -> openai.OpenAI:
    return sdk(tools_suite)


@pytest.fixture(scope="module")
def http(tools_suite: Suite) -> Iterator[httpx.Client]:
    with tools_suite.admin_client() as c:
        yield c


def sent(fake: FakeProviders, tag: str) -> list[dict]:
    return [r.body for r in fake.requests(tag)]


def ask_weather() -> list[dict]:
    return [{"role": "user", "content": "What is the weather in Oslo?"}]


# -- tools -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(FAMILY))
def test_a_two_turn_tool_conversation(tag: str, client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset(tag)
    first = client.chat.completions.create(model=FAMILY[tag], messages=ask_weather(), tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    conversation = [
        *ask_weather(),
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "clear"})},
    ]
    second = client.chat.completions.create(model=FAMILY[tag], messages=conversation, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    # The provider got the tools and, on the second turn, the call and its answer on its own wire format.
    bodies = sent(fake, tag)
    assert bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    assert bodies[1]["messages"][1]["tool_calls"][0]["id"] == call.id
    assert bodies[1]["messages"][2] == {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": call.id}


def test_a_streamed_tool_call_is_reassembled_by_the_sdk(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    with client.chat.completions.stream(
        model=FAMILY["openai"], messages=ask_weather(), tools=[WEATHER], tool_choice="required"
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # Raw chunks: the first fragment of the call has id, type, name and "" arguments; then pieces.
    raw = list(
        client.chat.completions.create(model=FAMILY["openai"], messages=ask_weather(), tools=[WEATHER], stream=True)
    )
    fragments = [tc for chunk in raw for c in chunk.choices for tc in c.delta.tool_calls or ()]
    assert fragments[0].id and fragments[0].type == "function" and fragments[0].function.name == "get_weather"
    assert fragments[0].function.arguments == ""
    assert all(f.id is None and f.function.name is None for f in fragments[1:]) and len(fragments) > 2
    assert "".join(f.function.arguments for f in fragments) == call.function.arguments
    conversation = [
        *ask_weather(),
        final.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=FAMILY["openai"], messages=conversation, tools=[WEATHER], stream=True
        )
        if c.choices
    )
    assert text.startswith("Hello from the fake openai")


def test_a_named_tool_choice_and_parallel_tool_calls_reach_the_provider(
    client: openai.OpenAI, fake: FakeProviders
) -> None:
    fake.reset("openai")
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    reply = client.chat.completions.create(
        model=FAMILY["openai"],
        messages=ask_weather(),
        tools=[other, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    body = sent(fake, "openai")[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


def test_legacy_functions_are_tools_under_another_name(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    reply = client.chat.completions.create(
        model=FAMILY["openai"], messages=ask_weather(), functions=[WEATHER["function"]], function_call="auto"
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "function_call" and message.function_call.name == "get_weather"
    conversation = [
        *ask_weather(),
        {"role": "assistant", "content": None, "function_call": message.function_call.model_dump()},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    again = client.chat.completions.create(
        model=FAMILY["openai"], messages=conversation, functions=[WEATHER["function"]]
    )
    assert again.choices[0].finish_reason == "stop"
    assert sent(fake, "openai")[1]["messages"][2]["role"] == "tool"


# -- structured outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["openai", "grok"])
def test_parse_with_a_pydantic_model(tag: str, client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset(tag)
    completion = client.chat.completions.parse(
        model=FAMILY[tag], messages=[{"role": "user", "content": "Forecast for Oslo"}], response_format=Forecast
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast)
    body = sent(fake, tag)[0]
    assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"]


def test_json_object_mode(client: openai.OpenAI, fake: FakeProviders) -> None:
    reply = client.chat.completions.create(
        model=FAMILY["deepseek"],
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


# -- capabilities ----------------------------------------------------------------------------------


def test_a_model_without_the_capability_is_refused_before_any_provider(
    client: openai.OpenAI, fake: FakeProviders
) -> None:
    fake.reset()
    cases = [
        ("acme/plain", {"tools": [WEATHER]}, "tools"),
        ("deepseek/deepseek-chat", {"response_format": Forecast}, "json_schema"),
        ("openai/gpt-5-mini", {"logprobs": True}, "logprobs"),
        ("moonshot/moonshot-v1-32k", {"messages": [_image_message(PNG)]}, "image_url"),
    ]
    for model, extra, needle in cases:
        kwargs = {"messages": ask_weather(), **extra}
        create = (
            client.chat.completions.parse
            if extra.get("response_format") is Forecast
            else client.chat.completions.create
        )
        with pytest.raises(openai.BadRequestError) as err:
            create(model=model, **kwargs)
        body = err.value.response.json()
        assert needle in body["message"] and model in body["message"], body
        assert body["error"] == "unsupported_parameter"
    assert fake.requests() == []


def test_a_policy_only_picks_models_that_have_what_the_request_needs(
    client: openai.OpenAI, fake: FakeProviders
) -> None:
    fake.reset()
    # Cheapest first: acme/plain (no tools) is skipped; moonshot has tools.
    reply = client.chat.completions.create(model="thrifty", messages=ask_weather(), tools=[WEATHER])
    assert reply.model == "moonshot/moonshot-v1-32k"
    # moonshot has no json_schema: the policy's next capable model answers.
    parsed = client.chat.completions.parse(model="thrifty", messages=ask_weather(), response_format=Forecast)
    assert parsed.model == "openai/gpt-4.1" and parsed.choices[0].message.parsed is not None
    assert fake.requests("acme") == []
    # Without tools the cheapest model is acme's.
    plain = client.chat.completions.create(model="thrifty", messages=ask_weather())
    assert plain.model == "acme/plain"


def test_the_model_list_shows_capabilities(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert {"tools", "json_schema", "vision", "logprobs"} <= set(models["openai/gpt-4o-mini"].capabilities)
    assert "tools" not in models["acme/plain"].capabilities


# -- images, logprobs, n, parameters ----------------------------------------------------------------


def _image_message(url: str) -> dict:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
        ],
    }


def test_image_parts_reach_the_provider_as_sent(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    https = "https://images.example/cat.png"
    reply = client.chat.completions.create(
        model=FAMILY["openai"], messages=[_image_message(PNG), _image_message(https)]
    )
    assert reply.choices[0].message.content
    content = sent(fake, "openai")[0]["messages"]
    assert content[0]["content"][1] == {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}
    assert content[1]["content"][1]["image_url"]["url"] == https


def test_logprobs_n_and_sampling_parameters(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    reply = client.chat.completions.create(
        model=FAMILY["openai"],
        messages=ask_weather(),
        logprobs=True,
        top_logprobs=2,
        n=2,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias={"50256": -100},
        user="end-user-7",
        metadata={"run": "t1"},
        max_completion_tokens=50,
    )
    assert [c.index for c in reply.choices] == [0, 1]
    content = reply.choices[0].logprobs.content
    assert content and len(content[0].top_logprobs) == 2 and content[0].logprob < 0
    assert reply.usage.completion_tokens == 2 * len(content)
    bodies = sent(fake, "openai")
    assert len(bodies) == 2
    body = bodies[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["seed"] == 3
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
    assert body["logit_bias"] == {"50256": -100.0} and body["user"] == "end-user-7"
    assert "metadata" not in body  # kept at the gateway: no provider stores completions for us
    chunks = list(
        client.chat.completions.create(
            model=FAMILY["openai"], messages=ask_weather(), n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert chunks[-1].usage.completion_tokens > 0


def test_unknown_fields_are_ignored_and_named_known_unsupported_ones_refused(http: httpx.Client) -> None:
    body = {"model": FAMILY["openai"], "messages": ask_weather(), "vendor_extra": {"x": 1}, "top_k": 5}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-goblin-ignored-params"] == "top_k,vendor_extra"
    for extra in ({"audio": {"voice": "x"}}, {"store": True}, {"modalities": ["text", "audio"]}):
        refused = http.post("/v1/chat/completions", json={**body, **extra})
        assert refused.status_code == 400 and next(iter(extra)) in refused.json()["message"]


# -- /v1/completions -------------------------------------------------------------------------------


def test_legacy_text_completion_unary_and_streamed(client: openai.OpenAI, fake: FakeProviders) -> None:
    fake.reset("openai")
    reply = client.completions.create(model=FAMILY["openai"], prompt="Once upon a time", max_tokens=5, echo=True)
    assert reply.object == "text_completion"
    assert reply.choices[0].text.startswith("Once upon a time") and reply.choices[0].finish_reason == "length"
    assert sent(fake, "openai")[0]["messages"] == [{"role": "user", "content": "Once upon a time"}]
    pieces = list(client.completions.create(model=FAMILY["openai"], prompt="Hi", stream=True, n=2))
    texts = {0: "", 1: ""}
    for chunk in pieces:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts[0].startswith("Hello from the fake openai") and texts[0] == texts[1]
    scored = client.completions.create(model=FAMILY["openai"], prompt="Hi", logprobs=2)
    assert scored.choices[0].logprobs.tokens and len(scored.choices[0].logprobs.top_logprobs[0]) == 2


def test_legacy_text_completion_refuses_what_it_cannot_honour(http: httpx.Client, tools_suite: Suite) -> None:
    for extra in ({"prompt": [1, 2, 3]}, {"suffix": "end"}, {"best_of": 3}, {"prompt": ["a", "b"]}):
        reply = http.post("/v1/completions", json={"model": FAMILY["openai"], "prompt": "x", **extra})
        assert reply.status_code == 400, (extra, reply.text)
    with tools_suite.client() as anonymous:
        assert anonymous.post("/v1/completions", json={"model": FAMILY["openai"], "prompt": "x"}).status_code == 401
    narrow = http.post("/auth/api-keys", json={"name": "rag only", "scopes": ["rag"]})
    assert narrow.status_code == 201, narrow.text
    with tools_suite.client(headers={"Authorization": f"Bearer {narrow.json()['key']}"}) as other:
        reply = other.post("/v1/completions", json={"model": FAMILY["openai"], "prompt": "x"})
        assert reply.status_code == 403


# -- bad input: refused at the gateway, nothing reaches a provider ----------------------------------


BAD = [
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]}),
    ("tools", {"tools": [{"type": "function", "function": {"name": "bad name!", "parameters": {}}}]}),
    ("tool_choice", {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    ("tool_call_id", {"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "42"}]}),
    ("image_url", {"messages": [_image_message("data:image/png;base64,!!!not-base64")]}),
    ("image_url", {"messages": [_image_message("data:text/html;base64,PGgxPg==")]}),
    ("image_url", {"messages": [_image_message("http://169.254.169.254/latest/meta-data")]}),
    ("MiB", {"messages": [_image_message("data:image/png;base64," + "A" * (7 * 1024 * 1024))]}),
    (
        "response_format",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
    ),
    ("top_logprobs", {"top_logprobs": 3}),
    ("logit_bias", {"logit_bias": {"abc": 1}}),
    ("content", {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
]


@pytest.mark.parametrize(("needle", "extra"), BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_is_refused_before_any_provider(
    needle: str, extra: dict, http: httpx.Client, fake: FakeProviders
) -> None:
    fake.reset()
    reply = http.post("/v1/chat/completions", json={"model": FAMILY["openai"], "messages": ask_weather(), **extra})
    assert reply.status_code == 400, reply.text
    assert needle in reply.json()["message"], reply.json()
    assert fake.requests() == []
