"""The Anthropic adapter's translation of tools, tool calls and results, images and response_format,
both ways, unary and streamed. The network is an httpx.MockTransport."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from services.common.chat import Message, SamplingParams
from services.common.chat_content import ChatOptions, ContentPart, ResponseFormat, Tool, ToolCall, ToolChoice
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.anthropic import AnthropicProvider, messages_body
from services.router.providers.base import CallContext
from services.router.providers.format_tool import FORMAT_TOOL_DESCRIPTION
from services.router.providers.http import HttpOptions
from services.router.providers.tool_ids import wire_id

CLAUDE = ModelInfo(id="anthropic/claude-haiku-4-5", provider="anthropic", owned_by="anthropic", max_output_tokens=1000)
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
        "Let me look.",
        tool_calls=(
            ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
            ToolCall("functions.get_time:1", "get_time", ""),
        ),
    ),
    Message("tool", "18 C", tool_call_id="functions.get_time:1"),
    Message("tool", '{"sky": "clear"}', tool_call_id="call_a"),
    Message("user", "Thanks."),
]


def body(messages=CONVERSATION, options=ChatOptions(), **kw) -> dict:
    return messages_body(CLAUDE, list(messages), SamplingParams(), options, stream=False, **kw)


def test_tool_calls_become_tool_use_and_tool_messages_one_user_turn_of_results() -> None:
    turns = body()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": wire_id("functions.get_time:1"), "name": "get_time", "input": {}},
    ]
    # Consecutive tool messages and the next user text are one user turn, the results first.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": wire_id("functions.get_time:1"), "content": "18 C"},
        {"type": "tool_result", "tool_use_id": "call_a", "content": '{"sky": "clear"}'},
        {"type": "text", "text": "Thanks."},
    ]


def test_ids_other_providers_issue_are_rewritten_the_same_way_everywhere() -> None:
    odd = wire_id("functions.get_time:1")
    assert odd != wire_id("functions.get_time:2") and odd == wire_id("functions.get_time:1")
    assert all(c.isalnum() or c in "_-" for c in odd) and len(odd) <= 64
    assert wire_id("toolu_01A") == "toolu_01A"
    assert wire_id("x" * 65) != "x" * 65 and len(wire_id("x" * 65)) <= 64


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        (None, None, None),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("function", "get_time"), None, {"type": "tool", "name": "get_time"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tools_and_tool_choice(choice, parallel, wire) -> None:
    sent = body(options=ChatOptions(tools=(WEATHER, CLOCK), tool_choice=choice, parallel_tool_calls=parallel))
    assert sent["tools"] == [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": dict(WEATHER.parameters)},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert sent.get("tool_choice") == wire


def test_images_are_base64_or_url_sources_and_too_large_ones_are_refused() -> None:
    message = Message(
        "user",
        "What is this?",
        parts=(
            ContentPart("text", text="What is this?"),
            ContentPart("image_url", image_url=f"data:image/png;base64,{PNG}"),
            ContentPart("image_url", image_url="https://example.com/cat.jpg"),
        ),
    )
    assert body([message])["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    big = base64.b64encode(b"\0" * (5 * 1024 * 1024 + 1)).decode()
    huge = Message("user", "", parts=(ContentPart("image_url", image_url=f"data:image/png;base64,{big}"),))
    with pytest.raises(InvalidArgument, match="5 MiB"):
        body([huge])


def test_arguments_that_are_not_a_json_object_are_refused() -> None:
    bad = Message("assistant", "", tool_calls=(ToolCall("call_1", "get_time", "[1, 2]"),))
    with pytest.raises(InvalidArgument, match=r"messages\[1\]\.tool_calls\[0\]"):
        body([Message("user", "hi"), bad, Message("tool", "x", tool_call_id="call_1")])


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
}


def test_response_format_is_a_forced_tool_and_with_other_tools_any() -> None:
    fmt = ResponseFormat(type="json_schema", name="Weather", schema=SCHEMA, strict=True)
    sent = body([Message("user", "Paris?")], ChatOptions(response_format=fmt))
    assert sent["tools"] == [
        {
            "name": "Weather",
            "description": FORMAT_TOOL_DESCRIPTION,
            "input_schema": SCHEMA,
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "Weather"}
    mixed = body([Message("user", "Paris?")], ChatOptions(tools=(WEATHER,), response_format=fmt))
    assert [t["name"] for t in mixed["tools"]] == ["get_weather", "Weather"]
    assert mixed["tool_choice"] == {"type": "any"}
    plain = body([Message("user", "Paris?")], ChatOptions(response_format=ResponseFormat(type="json_object")))
    assert plain["tools"][0]["input_schema"] == {"type": "object"} and plain["tool_choice"]["type"] == "tool"
    # A schema that is not an object travels wrapped, since a tool's input is an object.
    listed = ResponseFormat(type="json_schema", name="Cities", schema={"type": "array", "items": {"type": "string"}})
    wrapped = body([Message("user", "Cities?")], ChatOptions(response_format=listed))["tools"][0]["input_schema"]
    assert wrapped == {"type": "object", "properties": {"value": listed.schema}, "required": ["value"]}


def provider(handler) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic", "https://api.anthropic.com", "ak", HttpOptions(), transport=httpx.MockTransport(handler)
    )


def message(content: list, stop_reason: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": content,
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 9, "output_tokens": 4},
        },
    )


async def test_tool_use_answer_is_tool_calls_with_finish_reason_tool_calls() -> None:
    answer = message(
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
        "tool_use",
    )
    result = await provider(lambda r: answer).chat(
        CLAUDE, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(tools=(WEATHER, CLOCK))
    )
    assert result.finish_reason == "tool_calls"
    assert result.text == "Checking."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}),
        ("toolu_2", "get_time", {}),
    ]


async def test_the_format_tools_input_is_the_answer_text() -> None:
    fmt = ResponseFormat(type="json_schema", name="Weather", schema=SCHEMA)
    answer = message(
        [{"type": "tool_use", "id": "toolu_1", "name": "Weather", "input": {"city": "Paris", "temp": 18}}], "tool_use"
    )
    result = await provider(lambda r: answer).chat(
        CLAUDE, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(response_format=fmt)
    )
    assert json.loads(result.text) == {"city": "Paris", "temp": 18}
    assert result.finish_reason == "stop" and not result.tool_calls


def event(name: str, payload: dict) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"


def stream_of(*blocks: tuple[dict, list[dict]], stop_reason: str = "tool_use") -> httpx.Response:
    events = [event("message_start", {"message": {"id": "msg_1", "usage": {"input_tokens": 7, "output_tokens": 1}}})]
    for index, (start, deltas) in enumerate(blocks):
        events.append(event("content_block_start", {"index": index, "content_block": start}))
        events.extend(event("content_block_delta", {"index": index, "delta": d}) for d in deltas)
        events.append(event("content_block_stop", {"index": index}))
    events.append(event("message_delta", {"delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 12}}))
    events.append(event("message_stop", {}))
    return httpx.Response(200, content="".join(events).encode(), headers={"content-type": "text/event-stream"})


def json_delta(piece: str) -> dict:
    return {"type": "input_json_delta", "partial_json": piece}


async def collect(stream) -> list:
    return [delta async for delta in stream]


async def test_streamed_tool_use_becomes_openai_style_tool_call_deltas() -> None:
    response = stream_of(
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Checking."}]),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            [json_delta(""), json_delta('{"city": '), json_delta('"Paris"}')],
        ),
        ({"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}, [json_delta("")]),
    )
    deltas = await collect(
        provider(lambda r: response).stream(
            CLAUDE, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(tools=(WEATHER, CLOCK))
        )
    )
    assert deltas[0].text == "Checking."
    pieces = [(d.index, d.id, d.name, d.arguments) for delta in deltas for d in delta.tool_calls]
    assert pieces == [
        (0, "toolu_1", "get_weather", ""),
        (0, "", "", '{"city": '),
        (0, "", "", '"Paris"}'),
        (1, "toolu_2", "get_time", ""),
        (1, "", "", "{}"),  # a call without arguments still has a JSON object
    ]
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage.prompt_tokens == 7 and deltas[-1].usage.completion_tokens == 12


async def test_a_streamed_format_tool_is_answer_text() -> None:
    fmt = ResponseFormat(type="json_schema", name="Weather", schema=SCHEMA)
    response = stream_of(
        (
            {"type": "tool_use", "id": "toolu_1", "name": "Weather", "input": {}},
            [json_delta('{"city": "Pa'), json_delta('ris", "temp": 18}')],
        ),
    )
    deltas = await collect(
        provider(lambda r: response).stream(
            CLAUDE, [Message("user", "Paris?")], SamplingParams(), CTX, ChatOptions(response_format=fmt)
        )
    )
    assert json.loads("".join(d.text for d in deltas)) == {"city": "Paris", "temp": 18}
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-1].finish_reason == "stop"
    listed = ResponseFormat(type="json_schema", name="Cities", schema={"type": "array", "items": {"type": "string"}})
    response = stream_of(
        (
            {"type": "tool_use", "id": "toolu_1", "name": "Cities", "input": {}},
            [json_delta('{"value": ["Pa'), json_delta('ris"]}')],
        ),
    )
    deltas = await collect(
        provider(lambda r: response).stream(
            CLAUDE, [Message("user", "Cities?")], SamplingParams(), CTX, ChatOptions(response_format=listed)
        )
    )
    assert json.loads("".join(d.text for d in deltas)) == ["Paris"]
