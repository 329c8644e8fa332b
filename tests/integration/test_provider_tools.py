"""Tools, structured outputs and images on Anthropic and Gemini end to end: the official openai SDK ->
the gateway -> the router -> the Anthropic / Gemini adapters -> the fake providers' real wire formats,
which check what they receive (refusing malformed requests as the real APIs do) and answer with tool
calls or JSON.

Covers, on each family: a two-turn tool conversation unary and streamed (the SDK's stream helper
reassembles the tool-call fragments); ``parse()`` with a pydantic model, unary and streamed; tools
and a JSON schema together; image parts reaching the provider in its format (the fake records them);
a conversation that starts on one provider and continues on the other through a fallback (tool-call
ids round-trip both ways); and image URLs Goblin must not fetch refused with a 400 before any provider
is called.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, start_suite
from tests.integration.test_router import SUITE_ENV, flush_redis, redis_db, sdk

MODELS = {"anthropic": "anthropic/claude-haiku-4-5", "gemini": "gemini/gemini-2.5-flash"}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}]
# parse() takes strict function tools only (OpenAI's strict mode: every property required, no others).
STRICT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {**WEATHER, "required": ["city", "unit"]},
            "strict": True,
        },
    }
]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n a tiny png").decode()


class Day(BaseModel):
    high: int
    sky: str | None


class Forecast(BaseModel):
    city: str
    days: list[Day]


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


@pytest.fixture(scope="module")
def client(suite: Suite) -> openai.OpenAI:
    return sdk(suite)


@dataclass
class Answer:
    text: str = ""
    finish_reason: str = ""
    model: str = ""
    tool_calls: list[dict] = field(default_factory=list)


def ask(client: openai.OpenAI, model: str, messages: list[dict], *, stream: bool, **kw) -> Answer:
    """One answer; a stream reassembled by the SDK's own stream helper."""
    if stream:
        with client.chat.completions.stream(model=model, messages=messages, max_tokens=200, **kw) as events:
            for _ in events:
                pass
            reply = events.get_final_completion()
    else:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=200, **kw)
    choice = reply.choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in choice.message.tool_calls or ()
    ]
    return Answer(choice.message.content or "", choice.finish_reason, reply.model, calls)


def answered(question: list[dict], first: Answer, result: str) -> list[dict]:
    """``question``, the assistant's tool calls and the client's answer to them."""
    calls = [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in first.tool_calls
    ]
    replies = [{"role": "tool", "tool_call_id": c["id"], "content": result} for c in first.tool_calls]
    return [*question, {"role": "assistant", "content": first.text or None, "tool_calls": calls}, *replies]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", list(MODELS))
def test_two_turn_tool_conversation(client: openai.OpenAI, fake: FakeProviders, family: str, stream: bool) -> None:
    fake.reset(family)
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    first = ask(client, MODELS[family], question, stream=stream, tools=TOOLS)
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    second = ask(client, MODELS[family], answered(question, first, "18 C and sunny"), stream=stream, tools=TOOLS)
    assert second.finish_reason == "stop" and not second.tool_calls
    assert "18 C and sunny" in second.text
    sent = fake.requests(family)[-1].body
    if family == "anthropic":
        assert sent["tools"][0]["input_schema"] == WEATHER
        assert sent["messages"][1]["content"][-1] == {
            "type": "tool_use",
            "id": call["id"],
            "name": "get_weather",
            "input": json.loads(call["arguments"]),
        }
        assert sent["messages"][2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18 C and sunny"}],
        }
    else:
        declared = sent["tools"][0]["functionDeclarations"][0]
        assert declared["parameters"]["properties"]["city"] == {"type": "STRING"}
        assert "additionalProperties" not in declared["parameters"]
        assert sent["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"output": "18 C and sunny"}}}
        ]


@pytest.mark.parametrize("family", list(MODELS))
def test_parse_with_a_pydantic_model_unary_and_streamed(
    client: openai.OpenAI, fake: FakeProviders, family: str
) -> None:
    fake.reset(family)
    question = [{"role": "user", "content": "Forecast for Paris"}]
    parsed = client.chat.completions.parse(
        model=MODELS[family], messages=question, response_format=Forecast, max_tokens=200
    )
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and forecast.days
    assert parsed.choices[0].finish_reason == "stop"
    sent = fake.requests(family)[-1].body
    if family == "anthropic":
        assert sent["tool_choice"] == {"type": "tool", "name": "Forecast"}
    else:
        config = sent["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["properties"]["days"]["items"]["properties"]["sky"] == {
            "type": "STRING",
            "title": "Sky",
            "nullable": True,
        }
    with client.chat.completions.stream(
        model=MODELS[family], messages=question, response_format=Forecast, max_tokens=200
    ) as events:
        for _ in events:
            pass
        streamed = events.get_final_completion().choices[0].message.parsed
    assert isinstance(streamed, Forecast)


@pytest.mark.parametrize("family", list(MODELS))
def test_tools_and_a_json_schema_together(client: openai.OpenAI, family: str) -> None:
    question = [{"role": "user", "content": "Forecast for Paris"}]
    first = client.chat.completions.parse(
        model=MODELS[family], messages=question, tools=STRICT_TOOLS, response_format=Forecast
    ).choices[0]
    assert first.finish_reason == "tool_calls" and first.message.parsed is None
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather" and call.function.parsed_arguments["city"]
    asked = Answer(tool_calls=[{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}])
    final = client.chat.completions.parse(
        model=MODELS[family], messages=answered(question, asked, "18"), tools=STRICT_TOOLS, response_format=Forecast
    )
    assert isinstance(final.choices[0].message.parsed, Forecast)
    assert not final.choices[0].message.tool_calls and final.choices[0].finish_reason == "stop"


def test_image_parts_reach_each_provider_in_its_format(client: openai.OpenAI, fake: FakeProviders) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    for family in MODELS:
        fake.reset(family)
        client.chat.completions.create(model=MODELS[family], messages=[{"role": "user", "content": content}])
    https = {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.jpg", "detail": "low"}}
    client.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": [*content, https]}])
    first, second = fake.requests("anthropic")
    assert first.body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    # Anthropic fetches an https image itself: the URL goes as it is, Goblin fetches nothing.
    assert second.body["messages"][0]["content"][2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://images.example.com/cat.jpg"},
    }
    (gemini,) = fake.requests("gemini")
    assert gemini.body["contents"][0]["parts"] == [
        {"text": "What is in this picture?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.png",
        "https://169.254.169.254/latest/meta-data.png",
        "https://[::1]:8443/x.png",
        "https://10.0.0.7/internal.png",
        "https://localhost/x.png",
    ],
)
def test_an_image_url_gemini_would_need_fetched_from_a_private_address_is_a_400(
    client: openai.OpenAI, fake: FakeProviders, url: str
) -> None:
    fake.reset("gemini")
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODELS["gemini"], messages=[{"role": "user", "content": content}])
    assert "not a public address" in refused.value.response.text, refused.value.response.text
    assert fake.requests("gemini") == [], "nothing reached Gemini"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("first", "then"), [("anthropic", "gemini"), ("gemini", "anthropic")])
def test_a_tool_conversation_continues_on_the_other_provider_after_a_fallback(
    client: openai.OpenAI, fake: FakeProviders, first: str, then: str, stream: bool
) -> None:
    fake.reset()
    question = [{"role": "user", "content": "Weather in Paris?"}]
    asked = ask(client, MODELS[first], question, stream=stream, tools=TOOLS)
    fake.fail(first, 503, times=None)  # the first provider goes down: the router falls back
    try:
        answer = ask(
            client,
            MODELS[first],
            answered(question, asked, "light rain"),
            stream=stream,
            tools=TOOLS,
            extra_body={"goblin": {"fallbacks": [MODELS[then]]}},
        )
    finally:
        fake.reset(first)
    assert answer.model == MODELS[then]
    assert "light rain" in answer.text and answer.finish_reason == "stop"
    # The other provider got the first one's call, with its id where its format has ids.
    sent = fake.requests(then)[-1].body
    call = asked.tool_calls[0]
    if then == "anthropic":
        assert sent["messages"][1]["content"][0]["id"] == call["id"]
        assert sent["messages"][2]["content"][0]["tool_use_id"] == call["id"]
    else:
        assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
