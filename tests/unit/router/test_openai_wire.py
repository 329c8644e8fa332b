"""The OpenAI-compatible adapter passes tools, tool choice, response formats, content parts, penalties
and logprobs through on Chat Completions' wire format, and reads tool calls (whole and streamed
fragments) and logprobs back."""

from __future__ import annotations

import httpx

from services.common.chat import Message, SamplingParams
from services.common.chat_content import (
    ChatOptions,
    ContentPart,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)
from tests.unit.router.test_adapters import CTX, GPT, Capture, collect, data, openai, sse

WEATHER = Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}, strict=True)
PNG = "data:image/png;base64,iVBORw0KGgo="


async def test_the_request_carries_everything_as_openai_names_it() -> None:
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": {
                    "content": [{"token": "x", "logprob": -0.5, "top_logprobs": [{"token": "x", "logprob": -0.5}]}]
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    capture = Capture(httpx.Response(200, json=answer))
    provider = openai(capture)
    messages = [
        Message(
            "user",
            "see",
            parts=(ContentPart("text", text="see"), ContentPart("image_url", image_url=PNG, detail="low")),
        )
    ]
    options = ChatOptions(
        tools=(WEATHER,),
        tool_choice=ToolChoice("function", "get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", "out", {"type": "object"}, strict=True),
        user="end-user-1",
    )
    params = SamplingParams(
        presence_penalty=0.5, frequency_penalty=0.1, logit_bias={42: -100}, logprobs=True, top_logprobs=1
    )
    result = await provider.chat(GPT, messages, params, CTX, options)
    body = capture.body
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": WEATHER.parameters,
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert body["user"] == "end-user-1"
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.1
    assert body["logit_bias"] == {"42": -100.0} and body["logprobs"] is True and body["top_logprobs"] == 1
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (ToolCall("call_9", "get_weather", "{}"),)
    assert result.logprobs[0].token == "x" and result.logprobs[0].top == (("x", -0.5),)


async def test_a_plain_request_has_none_of_the_new_fields() -> None:
    capture = Capture(httpx.Response(200, json={"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}))
    await openai(capture).chat(GPT, [Message("user", "hi")], SamplingParams(), CTX)
    assert set(capture.body) == {"model", "messages"}


async def test_streamed_tool_call_fragments_come_back_as_deltas() -> None:
    def chunk(delta: dict, finish: str | None = None) -> str:
        return data({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    capture = Capture(
        sse(
            chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk({}, "tool_calls"),
            "data: [DONE]",
        )
    )
    deltas = await collect(
        openai(capture).stream(GPT, [Message("user", "hi")], SamplingParams(), CTX, ChatOptions(tools=(WEATHER,)))
    )
    calls = [c for d in deltas for c in d.tool_calls]
    assert calls == [
        ToolCallDelta(0, "call_1", "get_weather", ""),
        ToolCallDelta(0, "", "", '{"city":'),
        ToolCallDelta(0, "", "", '"Oslo"}'),
    ]
    assert deltas[-1].finish_reason == "tool_calls"
    assert capture.body["tools"][0]["function"]["name"] == "get_weather"
