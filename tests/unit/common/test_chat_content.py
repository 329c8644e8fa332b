"""The chat contract of issue 15: content parts, tool calls, response formats and logprobs survive the
protobuf hop unchanged, and the one check of each refuses what no model could serve."""

from __future__ import annotations

import base64

import pytest

from goblin.v1 import common_pb2
from services.common.chat import (
    ChatDelta,
    ChatResult,
    ChunkHeader,
    Message,
    SamplingParams,
    Usage,
    check_messages,
    delta_from_proto,
    delta_to_proto,
    messages_from_proto,
    messages_to_proto,
    params_from_proto,
    params_to_proto,
    result_from_proto,
    result_to_proto,
)
from services.common.chat_content import (
    MAX_IMAGE_BYTES,
    ChatOptions,
    ContentPart,
    ResponseFormat,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    check_options,
    decode_data_url,
    options_from_proto,
    options_to_proto,
    required_capabilities,
)
from services.common.errors import InvalidArgument

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = Tool(
    name="get_weather",
    description="Weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def conversation() -> list[Message]:
    return [
        Message(
            role="user",
            content="What is this?",
            parts=(ContentPart("text", text="What is this?"), ContentPart("image_url", image_url=PNG, detail="low")),
        ),
        Message(role="assistant", content="", tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),)),
        Message(role="tool", content="12 C", tool_call_id="call_1"),
    ]


def test_messages_round_trip_through_proto() -> None:
    messages = conversation()
    assert messages_from_proto(messages_to_proto(messages)) == messages
    check_messages(messages)


def test_params_round_trip_through_proto() -> None:
    params = SamplingParams(
        max_tokens=10,
        presence_penalty=0.5,
        frequency_penalty=-1.0,
        logit_bias={50256: -100, 12: 5},
        logprobs=True,
        top_logprobs=3,
        seed=7,
    )
    assert params.logit_bias == ((12, 5.0), (50256, -100.0))
    assert params_from_proto(params_to_proto(params)) == params
    assert params_from_proto(params_to_proto(SamplingParams())) == SamplingParams()


def test_result_and_delta_round_trip_through_proto() -> None:
    logprobs = (TokenLogprob("Hi", -0.25, (("Hi", -0.25), ("Hello", -1.5))),)
    result = ChatResult(
        text="",
        finish_reason="tool_calls",
        usage=Usage(3, 4),
        model="openai/gpt-4o-mini",
        provider="openai",
        tool_calls=(ToolCall("call_1", "get_weather", "{}"),),
        logprobs=logprobs,
    )
    back = result_from_proto(result_to_proto(result))
    assert back.tool_calls == result.tool_calls
    assert back.logprobs == logprobs
    delta = ChatDelta(tool_calls=(ToolCallDelta(0, "call_1", "get_weather", ""),), logprobs=logprobs)
    assert delta_from_proto(delta_to_proto(delta, ChunkHeader("m", "p"), first=True)) == delta


def test_options_round_trip_through_proto() -> None:
    options = ChatOptions(
        tools=(WEATHER,),
        tool_choice=ToolChoice("function", "get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", "answer", {"type": "object"}, strict=True),
    )
    request = common_pb2.ChatRequest()
    options_to_proto(options, request)
    back = options_from_proto(request)
    assert back.tools[0].name == "get_weather" and back.tools[0].parameters == WEATHER.parameters
    assert back.tool_choice == options.tool_choice
    assert back.parallel_tool_calls is False
    assert back.response_format.schema == {"type": "object"} and back.response_format.strict
    assert options_from_proto(common_pb2.ChatRequest()).tools == ()


def test_required_capabilities() -> None:
    params = SamplingParams(logprobs=True)
    options = ChatOptions(tools=(WEATHER,), response_format=ResponseFormat("json_object"))
    assert required_capabilities(options, conversation(), params) == {"tools", "json", "vision", "logprobs"}
    assert required_capabilities(ChatOptions(), [Message("user", "hi")], SamplingParams()) == frozenset()


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([Message("tool", "x", tool_call_id="call_9")], "answers no tool call"),
        ([Message("tool", "x")], "must name the call"),
        ([Message("user", "x", tool_calls=(ToolCall("c", "f", "{}"),))], "only an assistant"),
        ([Message("assistant", "x", parts=(ContentPart("image_url", image_url=PNG),))], "only in user"),
        ([Message("user", "x", parts=(ContentPart("image_url", image_url="http://example.com/a.png"),))], "https"),
        ([Message("user", "x", parts=(ContentPart("image_url", image_url="data:image/png;base64,@@"),))], "base64"),
        ([Message("user", "x", parts=(ContentPart("video", text="x"),))], "content part type"),
    ],
)
def test_bad_messages_are_refused(messages: list[Message], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        check_messages(messages)


def test_a_huge_data_url_is_refused_before_decoding() -> None:
    huge = "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 2)
    with pytest.raises(InvalidArgument, match="at most"):
        decode_data_url(huge)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (ChatOptions(tools=(Tool("bad name!"),)), "function.name"),
        (ChatOptions(tools=(Tool("f", parameters={"type": "nonsense"}),)), "not a valid JSON Schema"),
        (ChatOptions(tools=(WEATHER, WEATHER)), "named twice"),
        (ChatOptions(tool_choice=ToolChoice("required")), "needs tools"),
        (ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("function", "other")), "not one of the tools"),
        (ChatOptions(response_format=ResponseFormat("yaml")), "response_format.type"),
        (ChatOptions(response_format=ResponseFormat("json_schema", "x", {"type": 3})), "JSON Schema"),
    ],
)
def test_bad_options_are_refused(options: ChatOptions, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        check_options(options)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"logit_bias": {1: 101}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "token ids"),
        ({"top_logprobs": 2}, "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_params_are_refused(kwargs: dict, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        SamplingParams(**kwargs)
