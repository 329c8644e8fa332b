"""Tools, structured outputs and images on Anthropic and Gemini end to end: the official openai SDK ->
the gateway -> the router -> the Anthropic / Gemini adapters -> the fake providers' real wire formats,
which check what they receive and answer with tool calls or JSON. A few tests call the router over
gRPC with a signed principal, as the gateway does, to see the proto fields themselves.

Covers, on each family, a two-turn tool conversation unary and streamed, ``parse()`` with a pydantic
model, a JSON-schema answer that validates, an image part reaching the provider in its format (the
fake records it), a conversation that starts on one provider and continues on the other through a
fallback (tool-call ids round-trip), and an image URL Goblin must not fetch refused before any
provider is called.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from goblin.v1 import common_pb2, router_pb2_grpc
from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, start_suite
from tests.integration.principals import as_caller
from tests.integration.test_router import SUITE_ENV, flush_redis, redis_db, sdk

MODELS = {"anthropic": "anthropic/claude-haiku-4-5", "gemini": "gemini/gemini-2.5-flash"}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
    "required": ["city"],
    "additionalProperties": False,
}
FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "array", "items": {"$ref": "#/$defs/Day"}},
    },
    "required": ["city", "days"],
    "$defs": {"Day": {"type": "object", "properties": {"high": {"type": "integer"}}, "required": ["high"]}},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n a tiny png").decode()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> Iterator[Suite]:
    url = redis_db(redis_url, 6)
    flush_redis(url)
    running = start_suite(
        tmp_path_factory.mktemp("provider-tools") / "suite",
        DATABASE_URL=new_database(),
        REDIS_URL=url,
        GOBLIN_DAILY_BUDGET_USD="1000",
        **SUITE_ENV,
        **fake.env(),
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@dataclass
class Answer:
    text: str = ""
    finish_reason: str = ""
    model: str = ""
    tool_calls: list[dict] = field(default_factory=list)


def message(role: str, content: str = "", **extra) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(role=role, content=content, **extra)


def weather_tool() -> common_pb2.Tool:
    return common_pb2.Tool(name="get_weather", description="Weather in a city", parameters_json=json.dumps(WEATHER))


def ask(suite: Suite, model: str, messages: list, *, stream: bool = False, **fields) -> Answer:
    """One chat through the router as the gateway sends it; a stream is reassembled as the openai SDK
    does (tool-call pieces joined by index)."""
    request = common_pb2.ChatRequest(model=model, messages=messages, **fields)
    request.params.max_tokens = 200
    request.routing.bypass_cache = True
    channel = suite.grpc_channel("router")
    with channel:
        stub = router_pb2_grpc.RouterStub(channel)
        metadata = as_caller(suite, "u-tools", scopes=("chat",))
        if not stream:
            reply = stub.Chat(request, timeout=30, metadata=metadata)
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.message.tool_calls]
            return Answer(reply.message.content, reply.finish_reason, reply.model, calls)
        answer, calls = Answer(), {}
        for chunk in stub.ChatStream(request, timeout=30, metadata=metadata):
            answer.text += chunk.delta
            answer.model = chunk.model or answer.model
            answer.finish_reason = chunk.finish_reason or answer.finish_reason
            for piece in chunk.tool_calls:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                for key in call:
                    call[key] += getattr(piece, key)
        answer.tool_calls = [calls[i] for i in sorted(calls)]
        return answer


def proto_calls(calls: list[dict]) -> list[common_pb2.ToolCall]:
    return [common_pb2.ToolCall(**call) for call in calls]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", list(MODELS))
def test_two_turn_tool_conversation(suite: Suite, fake: FakeProviders, family: str, stream: bool) -> None:
    fake.reset(family)
    question = [message("system", "Be brief."), message("user", "Weather in Paris?")]
    first = ask(suite, MODELS[family], question, stream=stream, tools=[weather_tool()])
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    answered = [
        *question,
        message("assistant", first.text, tool_calls=proto_calls(first.tool_calls)),
        message("tool", "18 C and sunny", tool_call_id=call["id"]),
    ]
    second = ask(suite, MODELS[family], answered, stream=stream, tools=[weather_tool()])
    assert second.finish_reason == "stop" and not second.tool_calls
    assert "18 C and sunny" in second.text
    sent = fake.requests(family)[-1].body
    if family == "anthropic":
        assert sent["tools"][0]["input_schema"] == WEATHER
        assert sent["messages"][-1]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call["id"],
            "content": "18 C and sunny",
        }
    else:
        assert sent["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["city"] == {"type": "STRING"}
        assert sent["contents"][-1]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"output": "18 C and sunny"}}}
        ]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", list(MODELS))
def test_json_schema_answer_validates(suite: Suite, family: str, stream: bool) -> None:
    fmt = common_pb2.ResponseFormat(type="json_schema", name="Forecast", schema_json=json.dumps(FORECAST), strict=True)
    answer = ask(suite, MODELS[family], [message("user", "Paris forecast")], stream=stream, response_format=fmt)
    assert answer.finish_reason == "stop" and not answer.tool_calls
    jsonschema.validate(json.loads(answer.text), FORECAST)


def test_an_image_reaches_each_provider_in_its_format(suite: Suite, fake: FakeProviders) -> None:
    parts = [
        common_pb2.ContentPart(type="text", text="What is in this picture?"),
        common_pb2.ContentPart(type="image_url", image_url=f"data:image/png;base64,{PNG}"),
        common_pb2.ContentPart(type="image_url", image_url="https://images.example.com/cat.jpg"),
    ]
    fake.reset("anthropic")
    ask(suite, MODELS["anthropic"], [message("user", "What is in this picture?", parts=parts)])
    blocks = fake.requests("anthropic")[-1].body["messages"][0]["content"]
    assert blocks[1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://images.example.com/cat.jpg"}},
    ]
    fake.reset("gemini")
    ask(suite, MODELS["gemini"], [message("user", "What is in this picture?", parts=parts[:2])])
    assert fake.requests("gemini")[-1].body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": PNG}
    }


def test_an_image_url_gemini_would_need_fetched_from_a_private_address_is_refused(
    suite: Suite, fake: FakeProviders
) -> None:
    fake.reset("gemini")
    parts = [
        common_pb2.ContentPart(type="text", text="What is this?"),
        common_pb2.ContentPart(type="image_url", image_url="https://127.0.0.1:9/metadata.png"),
    ]
    with pytest.raises(grpc.RpcError) as refused:
        ask(suite, MODELS["gemini"], [message("user", "What is this?", parts=parts)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a public address" in refused.value.details()
    assert fake.requests("gemini") == []


@pytest.mark.parametrize(("first", "then"), [("anthropic", "gemini"), ("gemini", "anthropic")])
def test_a_tool_conversation_continues_on_the_other_provider_after_a_fallback(
    suite: Suite, fake: FakeProviders, first: str, then: str
) -> None:
    fake.reset()
    question = [message("user", "Weather in Paris?")]
    asked = ask(suite, MODELS[first], question, tools=[weather_tool()])
    (call,) = asked.tool_calls
    answered = [
        *question,
        message("assistant", asked.text, tool_calls=proto_calls(asked.tool_calls)),
        message("tool", "light rain", tool_call_id=call["id"]),
    ]
    fake.fail(first, 503, times=None)  # the first provider is down: the router falls back
    try:
        routing = common_pb2.RoutingOptions(fallbacks=[MODELS[then]], bypass_cache=True)
        answer = ask(suite, MODELS[first], answered, tools=[weather_tool()], routing=routing)
    finally:
        fake.reset(first)
    assert answer.model == MODELS[then]
    assert "light rain" in answer.text and answer.finish_reason == "stop"


# -- through the gateway, with the official openai SDK -------------------------------------------------

SDK_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER},
    }
]


@pytest.fixture(scope="module")
def client(suite: Suite) -> openai.OpenAI:
    return sdk(suite)


def sdk_ask(client: openai.OpenAI, model: str, messages: list[dict], *, stream: bool, **kw) -> Answer:
    """One answer; a stream reassembled by the SDK's own stream helper."""
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=200, **kw)
        choice = reply.choices[0]
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or ()
        ]
        return Answer(choice.message.content or "", choice.finish_reason, reply.model, calls)
    with client.chat.completions.stream(model=model, messages=messages, max_tokens=200, **kw) as events:
        for _ in events:
            pass
        final = events.get_final_completion()
    choice = final.choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in choice.message.tool_calls or ()
    ]
    return Answer(choice.message.content or "", choice.finish_reason, final.model, calls)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", list(MODELS))
def test_sdk_two_turn_tool_conversation(client: openai.OpenAI, fake: FakeProviders, family: str, stream: bool) -> None:
    fake.reset(family)
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    first = sdk_ask(client, MODELS[family], question, stream=stream, tools=SDK_TOOLS)
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    answered = [
        *question,
        {
            "role": "assistant",
            "content": first.text or None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C and sunny"},
    ]
    second = sdk_ask(client, MODELS[family], answered, stream=stream, tools=SDK_TOOLS)
    assert second.finish_reason == "stop" and not second.tool_calls
    assert "18 C and sunny" in second.text


class Day(BaseModel):
    high: int
    sky: str | None


class Forecast(BaseModel):
    city: str
    days: list[Day]


@pytest.mark.parametrize("family", list(MODELS))
def test_sdk_parse_with_a_pydantic_model(client: openai.OpenAI, fake: FakeProviders, family: str) -> None:
    fake.reset(family)
    parsed = client.chat.completions.parse(
        model=MODELS[family],
        messages=[{"role": "user", "content": "Forecast for Paris"}],
        response_format=Forecast,
        max_tokens=200,
    )
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and forecast.days
    sent = fake.requests(family)[-1].body
    if family == "anthropic":
        assert sent["tool_choice"] == {"type": "tool", "name": "Forecast"}
    else:
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
        assert sent["generationConfig"]["responseSchema"]["properties"]["days"]["items"]["properties"]["sky"] == {
            "type": "STRING",
            "title": "Sky",
            "nullable": True,
        }


def test_sdk_image_parts_reach_each_provider_in_its_format(client: openai.OpenAI, fake: FakeProviders) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    for family in MODELS:
        fake.reset(family)
        client.chat.completions.create(model=MODELS[family], messages=[{"role": "user", "content": content}])
    assert fake.requests("anthropic")[-1].body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert fake.requests("gemini")[-1].body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": PNG}
    }


@pytest.mark.parametrize(("first", "then"), [("anthropic", "gemini"), ("gemini", "anthropic")])
def test_sdk_tool_conversation_moves_to_the_other_provider(
    client: openai.OpenAI, fake: FakeProviders, first: str, then: str
) -> None:
    fake.reset()
    question = [{"role": "user", "content": "Weather in Paris?"}]
    asked = sdk_ask(client, MODELS[first], question, stream=False, tools=SDK_TOOLS)
    (call,) = asked.tool_calls
    answered = [
        *question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "light rain"},
    ]
    fake.fail(first, 503, times=None)
    try:
        answer = sdk_ask(
            client,
            MODELS[first],
            answered,
            stream=True,
            tools=SDK_TOOLS,
            extra_body={"goblin": {"fallbacks": [MODELS[then]]}},
        )
    finally:
        fake.reset(first)
    assert answer.model == MODELS[then]
    assert "light rain" in answer.text and answer.finish_reason == "stop"
