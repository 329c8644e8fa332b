"""The gateway's one translation of OpenAI's chat wire format: requests into the shared chat types
(legacy functions onto tools, developer onto system), answers and streamed tool-call fragments out."""

from __future__ import annotations

import pytest

from goblin.v1 import common_pb2
from services.common.errors import InvalidArgument
from services.gateway.api.chat_wire import chat_messages, chat_options, delta_json, message_json
from services.gateway.api.schemas.openai import ChatCompletionRequest

FN = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


def body(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_legacy_functions_become_tools_and_function_messages_tool_answers() -> None:
    request = body(
        functions=[FN],
        function_call={"name": "lookup"},
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "find x"},
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "found"},
        ],
    )
    options = chat_options(request)
    assert [t.name for t in options.tools] == ["lookup"] and options.tool_choice.function == "lookup"
    messages = chat_messages(request.messages)
    assert messages[0].role == "system"
    call = messages[2].tool_calls[0]
    assert messages[3].role == "tool" and messages[3].tool_call_id == call.id and messages[3].name == ""
    assert request.legacy_functions


def test_a_function_message_answering_nothing_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="function_call"):
        chat_messages(body(messages=[{"role": "function", "name": "lookup", "content": "x"}]).messages)


def test_text_only_parts_travel_as_plain_content_and_images_as_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert chat_messages(body(messages=[{"role": "user", "content": parts}]).messages)[0].parts == ()
    image = [*parts, {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]
    message = chat_messages(body(messages=[{"role": "user", "content": image}]).messages)[0]
    assert message.content == "ab" and [p.type for p in message.parts] == ["text", "text", "image_url"]


def test_streamed_fragments_are_written_as_openai_streams_them() -> None:
    first = common_pb2.ChatChunk(role="assistant", tool_calls=[common_pb2.ToolCallDelta(index=0, id="c1", name="f")])
    assert delta_json(first, legacy=False) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    piece = common_pb2.ChatChunk(tool_calls=[common_pb2.ToolCallDelta(index=0, arguments='{"q"')])
    assert delta_json(piece, legacy=False) == {"tool_calls": [{"index": 0, "function": {"arguments": '{"q"'}}]}
    assert delta_json(piece, legacy=True) == {"function_call": {"arguments": '{"q"'}}
    assert delta_json(common_pb2.ChatChunk(role="assistant", delta="Hi"), legacy=False) == {
        "role": "assistant",
        "content": "Hi",
    }


def test_an_answer_with_calls_has_null_content() -> None:
    reply = common_pb2.ChatResponse(
        message=common_pb2.ChatMessage(tool_calls=[common_pb2.ToolCall(id="c", name="f", arguments="{}")])
    )
    assert message_json(reply, legacy=False)["content"] is None
    assert message_json(reply, legacy=False)["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert message_json(reply, legacy=True)["function_call"] == {"name": "f", "arguments": "{}"}


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"tools": [{"type": "function", "function": FN}], "functions": [FN]}, "not both"),
        ({"response_format": {"type": "json_schema"}}, "json_schema is required"),
    ],
)
def test_conflicting_options_are_refused(fields: dict, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        chat_options(body(**fields))
