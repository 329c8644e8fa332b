"""Grammar building, the streamed tool-call reader and tool turns in prompts: no model needed.

That the grammars hold the real model to their language is tested on it in test_structured.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.common.chat import Message
from services.common.chat_content import ChatOptions, ResponseFormat, Tool, ToolCall, ToolChoice
from services.common.errors import InvalidArgument
from services.inference.engine.grammar import constraint_for, tool_call_prefix
from services.inference.engine.prompt import template_turns
from services.inference.engine.sampling import Shaping, shape_logits
from services.inference.engine.toolcalls import ToolCallReader

pytestmark = pytest.mark.unit

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
GET = Tool(name="get", parameters={"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]})


def schema_format(schema: dict) -> ChatOptions:
    return ChatOptions(response_format=ResponseFormat(type="json_schema", name="answer", schema=schema))


def rules(gbnf: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in gbnf.splitlines())


def test_free_text_has_no_grammar() -> None:
    assert constraint_for(ChatOptions()) is None
    assert constraint_for(ChatOptions(response_format=ResponseFormat(type="text"))) is None
    # auto and none leave the answer free: the local model answers tool requests in text (README.md)
    assert constraint_for(ChatOptions(tools=(WEATHER,))) is None
    assert constraint_for(ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("auto"))) is None
    assert constraint_for(ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("none"))) is None


def test_json_object_is_any_object() -> None:
    constraint = constraint_for(ChatOptions(response_format=ResponseFormat(type="json_object")))
    assert constraint is not None and constraint.kind == "json"
    assert rules(constraint.gbnf)["root"] == "object"
    assert rules(constraint.gbnf)["object"].startswith('"{"')


def test_json_schema_grammar_follows_the_schema() -> None:
    constraint = constraint_for(schema_format(PERSON))
    assert constraint is not None and constraint.kind == "json" and not constraint.is_tool_call
    grammar = rules(constraint.gbnf)
    assert grammar["root"] == '"{" space name-kv "," space age-kv "}" space'
    assert grammar["age-kv"] == '"\\"age\\"" space ":" space integer'


def test_refs_resolve_and_the_request_schema_is_left_as_sent() -> None:
    schema = {
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/Address"}},
        "required": ["home"],
        "$defs": {"Address": {"type": "object", "properties": {"street": {"type": "string"}}}},
    }
    sent = json.dumps(schema)
    constraint = constraint_for(schema_format(schema))
    assert constraint is not None and "Address" in constraint.gbnf
    assert json.dumps(schema) == sent


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "minimum"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
    ],
)
def test_schemas_the_grammar_cannot_enforce_are_refused_by_keyword(schema: dict, keyword: str) -> None:
    with pytest.raises(InvalidArgument, match=f"cannot enforce '{keyword}'"):
        constraint_for(schema_format(schema))


def test_remote_refs_are_refused_never_fetched() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}}
    with pytest.raises(InvalidArgument, match="only local"):
        constraint_for(schema_format(schema))


def test_a_property_named_like_a_keyword_is_only_a_name() -> None:
    schema = {"type": "object", "properties": {"minimum": {"type": "integer"}, "not": {"type": "string"}}}
    assert constraint_for(schema_format(schema)) is not None


def test_required_tool_choice_offers_every_tool_with_its_arguments() -> None:
    constraint = constraint_for(ChatOptions(tools=(WEATHER, GET), tool_choice=ToolChoice("required")))
    assert constraint is not None and constraint.is_tool_call and constraint.tools == ("get_weather", "get")
    root = rules(constraint.gbnf)["root"]
    assert root.count("arguments") == 2 and root.endswith('"}"')
    # A forced tool call wins over a response format: a call has no content to shape.
    both = ChatOptions(
        tools=(WEATHER,), tool_choice=ToolChoice("required"), response_format=ResponseFormat(type="json_object")
    )
    assert constraint_for(both).is_tool_call  # type: ignore[union-attr]


def test_named_tool_choice_offers_that_tool_only() -> None:
    constraint = constraint_for(ChatOptions(tools=(WEATHER, GET), tool_choice=ToolChoice("function", "get")))
    assert constraint is not None and constraint.tools == ("get",)
    assert "get_weather" not in constraint.gbnf


def test_tools_with_same_named_definitions_keep_their_own() -> None:
    def tool(name: str, item_type: str) -> Tool:
        return Tool(
            name=name,
            parameters={
                "type": "object",
                "properties": {"item": {"$ref": "#/$defs/Item"}},
                "required": ["item"],
                "$defs": {"Item": {"type": item_type}},
            },
        )

    constraint = constraint_for(
        ChatOptions(tools=(tool("a", "integer"), tool("b", "boolean")), tool_choice=ToolChoice("required"))
    )
    assert constraint is not None
    grammar = rules(constraint.gbnf)
    assert grammar["tool0-args-item"] == "integer"
    assert grammar["tool1-args-item"] == "boolean"


def feed_all(reader: ToolCallReader, pieces: list[str]) -> list:
    deltas = []
    for piece in pieces:
        deltas.extend(reader.feed(piece))
    return deltas


def test_reader_streams_name_then_argument_pieces_without_the_wrapper() -> None:
    reader = ToolCallReader(["get", "get_weather"])
    text = tool_call_prefix("get_weather") + '{"city": "Paris"}' + "}"
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    deltas = feed_all(reader, pieces) + reader.finish()
    assert deltas[0].id == reader.id and deltas[0].id.startswith("call_") and deltas[0].name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert all(not d.id and not d.name for d in deltas[1:])
    assert "".join(d.arguments for d in deltas) == '{"city": "Paris"}'
    assert reader.complete
    assert reader.call() == ToolCall(id=reader.id, name="get_weather", arguments='{"city": "Paris"}')


def test_reader_tells_a_name_from_a_longer_one_starting_with_it() -> None:
    reader = ToolCallReader(["get_weather", "get"])
    deltas = feed_all(reader, ['{"name": "get', '", "arguments": {"key": "k"}}'])
    assert deltas[0].name == "get"
    assert "".join(d.arguments for d in deltas + reader.finish()) == '{"key": "k"}'


def test_reader_cut_by_length_keeps_every_character_written() -> None:
    reader = ToolCallReader(["get_weather"])
    deltas = feed_all(reader, [tool_call_prefix("get_weather"), '{"city": "Par'])
    deltas += reader.finish()
    assert not reader.complete
    assert "".join(d.arguments for d in deltas) == '{"city": "Par'
    # Cut before the name was whole: no call at all.
    early = ToolCallReader(["get_weather"])
    assert feed_all(early, ['{"name": "get_w']) == [] and early.finish() == [] and early.call() is None


def test_tool_turns_render_as_calls_and_results() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"temp": 21}', tool_call_id="call_1"),
    ]
    plain = template_turns(messages, ChatOptions(), None, tool_role=False)
    assert plain[1] == {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'}
    assert plain[2] == {"role": "user", "content": 'Result of get_weather (call call_1):\n{"temp": 21}'}
    with_role = template_turns(messages, ChatOptions(), None, tool_role=True)
    assert with_role[2] == {"role": "tool", "content": '{"temp": 21}'}


def test_a_constrained_request_tells_the_model_its_tools_or_schema() -> None:
    options = ChatOptions(tools=(WEATHER, GET), tool_choice=ToolChoice("function", "get_weather"))
    turns = template_turns([Message("user", "hi")], options, constraint_for(options), tool_role=False)
    assert turns[0]["role"] == "system" and "get_weather" in turns[0]["content"]
    assert "- get:" not in turns[0]["content"]  # only the tool it may call
    options = schema_format(PERSON)
    turns = template_turns(
        [Message("system", "Be brief."), Message("user", "hi")], options, constraint_for(options), tool_role=False
    )
    assert len(turns) == 2 and turns[0]["content"].startswith("Be brief.\n\n") and '"age"' in turns[0]["content"]


def test_logit_bias_then_openai_penalties() -> None:
    logits = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    counts = np.array([0, 1, 3, 0], dtype=np.float32)
    shaping = Shaping(presence_penalty=0.5, frequency_penalty=0.25)
    shape_logits(logits, np.array([0, 3]), np.array([10.0, -100.0], dtype=np.float32), counts, shaping)
    # token 0: +10 bias; 1: -0.5 presence -0.25 once; 2: -0.5 -0.75; 3: -100 bias
    assert logits.tolist() == [11.0, 1.25, 1.75, -96.0]
    untouched = np.array([1.0, 2.0], dtype=np.float32)
    shape_logits(untouched, np.array([], dtype=np.int64), np.array([], dtype=np.float32), None, Shaping())
    assert untouched.tolist() == [1.0, 2.0]


def test_json_strings_never_hold_raw_control_characters() -> None:
    """JSON forbids a raw newline inside a string: json.loads would refuse such an answer."""
    for options in (schema_format(PERSON), ChatOptions(response_format=ResponseFormat(type="json_object"))):
        constraint = constraint_for(options)
        assert constraint is not None
        assert rules(constraint.gbnf)["char"].startswith(r'[^"\\\x7F\x00-\x1F]')
