"""The Anthropic and Gemini adapters against the fake providers over real HTTP: the fakes check the
wire format as the real APIs do (and refuse what they refuse), so a two-turn tool conversation, a JSON
answer, an image and a conversation moving between the two providers prove the translation both ways.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import jsonschema
import pytest

from goblin_tools.fakes.providers import FakeProviders
from services.common.chat import ChatResult, Message, SamplingParams
from services.common.chat_content import ChatOptions, ContentPart, ResponseFormat, Tool, ToolCall, ToolChoice
from services.router.models import ModelInfo
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.base import CallContext
from services.router.providers.errors import ProviderRejected
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpOptions

CLAUDE = ModelInfo(id="anthropic/claude-haiku-4-5", provider="anthropic", owned_by="anthropic")
GEMINI = ModelInfo(id="gemini/gemini-2.5-flash", provider="gemini", owned_by="gemini")
CTX = CallContext(correlation_id="c-1", tenant_id="t")
WEATHER = Tool(
    name="get_weather",
    description="Weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TOOLS = ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("auto"))
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n tiny").decode()
FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "array", "items": {"$ref": "#/$defs/Day"}},
    },
    "required": ["city", "days"],
    "$defs": {
        "Day": {
            "type": "object",
            "properties": {"high": {"type": "integer"}, "sky": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["high", "sky"],
        }
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
def providers(fake: FakeProviders):
    fake.reset()
    env = fake.env()
    anthropic = AnthropicProvider("anthropic", env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_API_KEY"], HttpOptions())
    gemini = GeminiProvider("gemini", env["GEMINI_BASE_URL"], env["GEMINI_API_KEY"], HttpOptions())
    return {"anthropic": (anthropic, CLAUDE), "gemini": (gemini, GEMINI)}


async def ask(provider, spec, messages, options=ChatOptions(), *, stream: bool) -> ChatResult:
    """One answer, assembled from the stream as an OpenAI client would when ``stream``."""
    if not stream:
        return await provider.chat(spec, messages, SamplingParams(max_tokens=200), CTX, options)
    text, calls, finish = [], {}, ""
    async for delta in provider.stream(spec, messages, SamplingParams(max_tokens=200), CTX, options):
        text.append(delta.text)
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id
            call["name"] += piece.name
            call["arguments"] += piece.arguments
        finish = delta.finish_reason or finish
    tool_calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items()))
    return ChatResult(text="".join(text), finish_reason=finish, usage=None, tool_calls=tool_calls)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_two_turn_tool_conversation(providers, fake: FakeProviders, family: str, stream: bool) -> None:
    provider, spec = providers[family]
    question = [Message("system", "Be brief."), Message("user", "Weather in Paris?")]
    first = await ask(provider, spec, question, TOOLS, stream=stream)
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.arguments), WEATHER.parameters)
    follow_up = [
        *question,
        Message("assistant", first.text, tool_calls=first.tool_calls),
        Message("tool", "18 C and sunny", tool_call_id=call.id),
    ]
    second = await ask(provider, spec, follow_up, TOOLS, stream=stream)
    assert second.finish_reason == "stop" and not second.tool_calls
    assert "18 C and sunny" in second.text


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_json_schema_answers_validate(providers, family: str, stream: bool) -> None:
    provider, spec = providers[family]
    fmt = ChatOptions(response_format=ResponseFormat(type="json_schema", name="Forecast", schema=FORECAST))
    answer = await ask(provider, spec, [Message("user", "Forecast for Paris")], fmt, stream=stream)
    jsonschema.validate(json.loads(answer.text), FORECAST)
    assert answer.finish_reason == "stop" and not answer.tool_calls


async def test_images_reach_each_provider_in_its_format(providers, fake: FakeProviders) -> None:
    parts = (
        ContentPart("text", text="What is this?"),
        ContentPart("image_url", image_url=f"data:image/png;base64,{PNG}"),
    )
    question = [Message("user", "What is this?", parts=parts)]
    for family in ("anthropic", "gemini"):
        provider, spec = providers[family]
        await provider.chat(spec, question, SamplingParams(), CTX)
    (anthropic_request,) = fake.requests("anthropic")
    assert anthropic_request.body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    (gemini_request,) = fake.requests("gemini")
    assert gemini_request.body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


@pytest.mark.parametrize(("first", "then"), [("anthropic", "gemini"), ("gemini", "anthropic")])
async def test_a_conversation_moves_between_providers_with_its_tool_call_ids(providers, first: str, then: str) -> None:
    provider, spec = providers[first]
    question = [Message("user", "Weather in Paris?")]
    asked = await provider.chat(spec, question, SamplingParams(), CTX, TOOLS)
    (call,) = asked.tool_calls
    follow_up = [
        *question,
        Message("assistant", asked.text, tool_calls=asked.tool_calls),
        Message("tool", "rain", tool_call_id=call.id),
    ]
    other, other_spec = providers[then]
    answer = await other.chat(other_spec, follow_up, SamplingParams(), CTX, TOOLS)
    assert "rain" in answer.text and answer.finish_reason == "stop"


async def test_the_fakes_refuse_malformed_requests_with_the_real_error_bodies(fake: FakeProviders) -> None:
    env = fake.env()
    async with httpx.AsyncClient() as client:
        orphan = await client.post(
            env["ANTHROPIC_BASE_URL"] + "/v1/messages",
            headers={"x-api-key": env["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"},
            json={
                "model": "claude",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}],
            },
        )
        assert orphan.status_code == 400
        assert orphan.json()["type"] == "error" and orphan.json()["error"]["type"] == "invalid_request_error"
        assert "corresponding `tool_use` block" in orphan.json()["error"]["message"]
        loose = await client.post(
            env["GEMINI_BASE_URL"] + "/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": env["GEMINI_API_KEY"]},
            json={
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": dict(WEATHER.parameters)}]}],
            },
        )
        assert loose.status_code == 400 and loose.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert 'Unknown name "' in loose.json()["error"]["message"]


async def test_a_provider_refusal_is_a_rejected_request(providers) -> None:
    provider, spec = providers["gemini"]
    # A function response that answers nothing Gemini called: refused by Gemini, surfaced as a 400.
    with pytest.raises(ProviderRejected):
        await provider._post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
        )


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_tools_with_a_json_schema_call_then_answer_json(providers, family: str, stream: bool) -> None:
    provider, spec = providers[family]
    options = ChatOptions(
        tools=(WEATHER,), response_format=ResponseFormat(type="json_schema", name="Forecast", schema=FORECAST)
    )
    question = [Message("user", "Forecast for Paris")]
    first = await ask(provider, spec, question, options, stream=stream)
    (call,) = first.tool_calls
    assert call.name == "get_weather" and first.finish_reason == "tool_calls"
    follow_up = [
        *question,
        Message("assistant", "", tool_calls=first.tool_calls),
        Message("tool", "18", tool_call_id=call.id),
    ]
    second = await ask(provider, spec, follow_up, options, stream=stream)
    assert second.finish_reason == "stop" and not second.tool_calls
    jsonschema.validate(json.loads(second.text), FORECAST)
