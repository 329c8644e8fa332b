"""The Gemini adapter's translation of tools, function calls and responses, images, response_format and
JSON Schema, both ways, unary and streamed. The network is an httpx.MockTransport."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from pydantic import BaseModel

from services.common.chat import Message, SamplingParams
from services.common.chat_content import (
    ChatOptions,
    ContentPart,
    ImageData,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.base import CallContext
from services.router.providers.gemini import THOUGHT_SIGNATURE_BYPASS, GeminiProvider, generate_body
from services.router.providers.gemini_schema import gemini_schema
from services.router.providers.http import HttpOptions

GEMINI = ModelInfo(id="gemini/gemini-2.5-flash", provider="gemini", owned_by="gemini")
CTX = CallContext(correlation_id="c-1", tenant_id="t")
WEATHER = Tool(
    name="get_weather",
    description="Weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool(name="get_time", parameters={"type": "object", "properties": {}})
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "Weather and time in Paris?"),
    Message(
        "assistant",
        "",
        tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_x", "get_time", "{}")),
    ),
    # Answered out of order: Gemini gets them in the calls' order.
    Message("tool", "18:00", tool_call_id="call_x"),
    Message("tool", '{"sky": "clear"}', tool_call_id="toolu_1"),
]


def body(messages=CONVERSATION, options=ChatOptions(), images=None) -> dict:
    return generate_body(GEMINI, list(messages), SamplingParams(), options, images)


def test_calls_are_function_call_parts_and_answers_function_responses_in_call_order() -> None:
    contents = body()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": THOUGHT_SIGNATURE_BYPASS,
        },
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "18:00"}}},
    ]


def test_a_tool_answer_to_an_unknown_call_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="tool_call_id"):
        body([Message("user", "hi"), Message("tool", "x", tool_call_id="call_nowhere")])


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("function", "get_time"), {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ],
)
def test_function_declarations_and_tool_config(choice, config) -> None:
    sent = body([Message("user", "hi")], ChatOptions(tools=(WEATHER, CLOCK), tool_choice=choice))
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
                },
                {"name": "get_time"},  # Gemini refuses an OBJECT without properties
            ]
        }
    ]
    assert sent.get("toolConfig") == ({"functionCallingConfig": config} if config else None)


def test_images_are_inline_data_from_data_urls_and_fetched_https() -> None:
    message = Message(
        "user",
        "What?",
        parts=(
            ContentPart("text", text="What?"),
            ContentPart("image_url", image_url=f"data:image/png;base64,{PNG}"),
            ContentPart("image_url", image_url="https://example.com/cat.jpg"),
        ),
    )
    fetched = {"https://example.com/cat.jpg": ImageData("image/jpeg", b"jpeg!")}
    assert body([message], images=fetched)["contents"][0]["parts"] == [
        {"text": "What?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(b"jpeg!").decode()}},
    ]
    with pytest.raises(InvalidArgument, match="not fetched"):
        body([message])


class Place(BaseModel):
    name: str
    country: str | None = None


class Forecast(BaseModel):
    place: Place
    days: list[int]
    kind: str = "daily"


def test_response_format_is_response_mime_type_and_a_gemini_schema() -> None:
    fmt = ResponseFormat(type="json_schema", name="Forecast", schema=Forecast.model_json_schema())
    config = body([Message("user", "hi")], ChatOptions(response_format=fmt))["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "OBJECT",
        "title": "Forecast",
        "properties": {
            "place": {
                "type": "OBJECT",
                "title": "Place",
                "properties": {
                    "name": {"type": "STRING", "title": "Name"},
                    "country": {"type": "STRING", "title": "Country", "default": None, "nullable": True},
                },
                "required": ["name"],
                "propertyOrdering": ["name", "country"],
            },
            "days": {"type": "ARRAY", "title": "Days", "items": {"type": "INTEGER"}},
            "kind": {"type": "STRING", "title": "Kind", "default": "daily"},
        },
        "required": ["place", "days"],
        "propertyOrdering": ["place", "days", "kind"],
    }
    plain = body([Message("user", "hi")], ChatOptions(response_format=ResponseFormat(type="json_object")))
    assert plain["generationConfig"] == {"responseMimeType": "application/json"}


def test_schema_conversion_drops_what_gemini_lacks_and_refuses_recursion() -> None:
    converted = gemini_schema(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "n": {"type": ["integer", "null"], "exclusiveMinimum": 0, "multipleOf": 2, "format": "int64"},
                "tag": {"const": "x"},
                "mode": {"oneOf": [{"type": "string", "format": "email"}, {"type": "number"}]},
                "any": {},
            },
        },
        "p",
    )
    assert converted == {
        "type": "OBJECT",
        "properties": {
            "n": {"type": "INTEGER", "format": "int64", "nullable": True},
            "tag": {"type": "STRING", "enum": ["x"]},
            "mode": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
            "any": {},
        },
    }
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(InvalidArgument, match="refers to itself"):
        gemini_schema(recursive, "p")
    with pytest.raises(InvalidArgument, match="not a local definition"):
        gemini_schema({"$ref": "https://example.com/s.json"}, "p")


def provider(handler) -> GeminiProvider:
    return GeminiProvider(
        "gemini",
        "https://generativelanguage.googleapis.com",
        "gk",
        HttpOptions(),
        transport=httpx.MockTransport(handler),
    )


def candidate(parts: list, finish: str | None = "STOP", usage: bool = True) -> dict:
    payload: dict = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}]}
    if finish:
        payload["candidates"][0]["finishReason"] = finish
    if usage:
        payload["usageMetadata"] = {"promptTokenCount": 5, "candidatesTokenCount": 3}
    return payload


CALLS = [
    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
    {"functionCall": {"name": "get_time", "args": {}}},
]


async def test_function_calls_get_ids_that_round_trip_and_finish_tool_calls() -> None:
    answer = httpx.Response(200, json=candidate(CALLS))
    gemini = provider(lambda r: answer)
    result = await gemini.chat(
        GEMINI, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(tools=(WEATHER, CLOCK))
    )
    assert result.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    ids = [c.id for c in result.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    # The client answers by id; Gemini gets the names back.
    follow_up = [
        Message("user", "Paris?"),
        Message("assistant", "", tool_calls=result.tool_calls),
        Message("tool", "sunny", tool_call_id=ids[0]),
        Message("tool", "noon", tool_call_id=ids[1]),
    ]
    names = [p["functionResponse"]["name"] for p in body(follow_up)["contents"][2]["parts"]]
    assert names == ["get_weather", "get_time"]
    single = await gemini.chat(
        GEMINI,
        [Message("user", "Paris?")],
        SamplingParams(),
        CTX,
        ChatOptions(tools=(WEATHER, CLOCK), parallel_tool_calls=False),
    )
    assert [c.name for c in single.tool_calls] == ["get_weather"]


async def test_streamed_function_calls_become_tool_call_deltas() -> None:
    events = [
        candidate([{"text": "Checking."}], None, False),
        candidate(CALLS[:1], None, False),
        candidate(CALLS[1:], "STOP"),
    ]
    content = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events).encode()
    response = httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
    deltas = [
        d
        async for d in provider(lambda r: response).stream(
            GEMINI, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(tools=(WEATHER, CLOCK))
        )
    ]
    assert deltas[0].text == "Checking."
    pieces = [(t.index, bool(t.id), t.name, t.arguments) for d in deltas for t in d.tool_calls]
    assert pieces == [
        (0, True, "get_weather", ""),
        (0, False, "", '{"city": "Paris"}'),
        (1, True, "get_time", ""),
        (1, False, "", "{}"),
    ]
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].usage.prompt_tokens == 5


async def test_https_images_are_fetched_before_the_request_and_private_ones_refused() -> None:
    sent = []
    gemini = provider(lambda r: sent.append(r) or httpx.Response(200, json=candidate([{"text": "a cat"}])))
    message = Message("user", "", parts=(ContentPart("image_url", image_url="https://127.0.0.1/cat.png"),))
    with pytest.raises(InvalidArgument, match="not a public address"):
        await gemini.chat(GEMINI, [message], SamplingParams(), CTX)
    assert not sent  # nothing reached Gemini


def test_with_functions_a_json_schema_travels_as_a_function_whose_call_is_the_answer() -> None:
    fmt = ResponseFormat(type="json_schema", name="Forecast", schema=Forecast.model_json_schema())
    sent = body([Message("user", "hi")], ChatOptions(tools=(WEATHER,), response_format=fmt))
    assert [d["name"] for d in sent["tools"][0]["functionDeclarations"]] == ["get_weather", "Forecast"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert "responseMimeType" not in sent.get("generationConfig", {})  # no JSON mode with function calling
    # Without callable functions, JSON mode.
    off = body(
        [Message("user", "hi")], ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("none"), response_format=fmt)
    )
    assert off["generationConfig"]["responseMimeType"] == "application/json"
    assert off["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


async def test_the_format_functions_call_is_answer_text_unary_and_streamed() -> None:
    fmt = ChatOptions(
        tools=(WEATHER,),
        response_format=ResponseFormat(type="json_schema", name="Forecast", schema=Forecast.model_json_schema()),
    )
    value = {"place": {"name": "Paris", "country": None}, "days": [18], "kind": "daily"}
    payload = candidate([{"functionCall": {"name": "Forecast", "args": value}}])
    result = await provider(lambda r: httpx.Response(200, json=payload)).chat(
        GEMINI, [Message("user", "hi")], SamplingParams(), CTX, fmt
    )
    assert json.loads(result.text) == value and not result.tool_calls and result.finish_reason == "stop"
    content = f"data: {json.dumps(payload)}\r\n\r\n".encode()
    streamed = httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
    deltas = [
        d
        async for d in provider(lambda r: streamed).stream(GEMINI, [Message("user", "hi")], SamplingParams(), CTX, fmt)
    ]
    assert json.loads("".join(d.text for d in deltas)) == value
    assert not any(d.tool_calls for d in deltas) and deltas[-1].finish_reason == "stop"
