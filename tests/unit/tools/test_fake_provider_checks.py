"""The fake Anthropic and Gemini APIs refuse what the real ones refuse, and answer deterministically."""

from __future__ import annotations

import jsonschema
import pytest

from goblin_tools.fakes import anthropic, gemini
from goblin_tools.fakes.schema_values import example

TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}


def claude(messages: list, **extra) -> dict:
    return {"model": "claude", "max_tokens": 10, "messages": messages, **extra}


def call_turn(*ids: str) -> dict:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids]}


def result(tool_use_id: str) -> dict:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": "ok"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (claude([{"role": "user", "content": "hi"}], response_format={}), "Extra inputs"),
        (claude([{"role": "user", "content": [{"type": "text", "text": ""}]}]), "non-empty"),
        (
            claude([{"role": "user", "content": "hi"}, call_turn("toolu_1"), {"role": "user", "content": "?"}]),
            "without `tool_result`",
        ),
        (
            claude(
                [
                    {"role": "user", "content": "hi"},
                    call_turn("toolu_1"),
                    {"role": "user", "content": [{"type": "text", "text": "x"}, result("toolu_1")]},
                ]
            ),
            "must come first",
        ),
        (claude([{"role": "user", "content": "hi"}, call_turn("functions.f:0")]), "should match pattern"),
        (claude([{"role": "user", "content": [result("toolu_9")]}]), "corresponding `tool_use`"),
        (
            claude(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": ""}}
                        ],
                    }
                ]
            ),
            "media_type",
        ),
        (
            claude([{"role": "user", "content": "hi"}], tools=[{"name": "f", "input_schema": {"type": "array"}}]),
            "'object'",
        ),
        (
            claude([{"role": "user", "content": "hi"}], tools=[TOOL], tool_choice={"type": "tool", "name": "g"}),
            "not found",
        ),
        (claude([{"role": "user", "content": "hi"}], tool_choice={"type": "auto"}), "while providing tools"),
    ],
)
def test_anthropic_refusals(body: dict, match: str) -> None:
    with pytest.raises(anthropic.WireError, match=match):
        anthropic.check_body(body)


def test_anthropic_plan_calls_the_forced_tool_with_schema_valid_input_then_quotes_results() -> None:
    body = claude([{"role": "user", "content": "hi"}], tools=[TOOL], tool_choice={"type": "tool", "name": "f"})
    (call,) = anthropic.plan(anthropic.check_body(body), "reply").calls
    assert call[1] == "f" and call[2] == {"x": 1}
    done = claude(
        [{"role": "user", "content": "hi"}, call_turn("toolu_1"), {"role": "user", "content": [result("toolu_1")]}],
        tools=[TOOL],
    )
    assert anthropic.plan(anthropic.check_body(done), "reply").text == "The tools said: ok"


def contents(*turns: tuple[str, list]) -> dict:
    return {"contents": [{"role": role, "parts": parts} for role, parts in turns]}


FUNCTIONS = {"tools": [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({**contents(("user", [{"text": "hi"}])), "tool_config": {}}, 'Unknown name "tool_config"'),
        (contents(("user", [{"text": "hi", "inlineData": {}}])), "oneof field 'data'"),
        (contents(("user", [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}])), "Base64 decoding failed"),
        (contents(("user", [{"functionCall": {"name": "f", "args": {}}}])), "from the model"),
        (
            {
                **FUNCTIONS,
                **contents(
                    ("user", [{"text": "hi"}]),
                    ("model", [{"functionCall": {"name": "f"}}, {"functionCall": {"name": "g"}}]),
                    ("user", [{"functionResponse": {"name": "f", "response": {}}}]),
                ),
            },
            "number of function response parts",
        ),
        (
            {
                **contents(("user", [{"text": "hi"}])),
                "tools": [
                    {"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {}}}]}
                ],
            },
            "non-empty for OBJECT",
        ),
        (
            {
                **contents(("user", [{"text": "hi"}])),
                "tools": [
                    {
                        "functionDeclarations": [
                            {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}}
                        ]
                    }
                ],
            },
            'Unknown name "\\$ref"',
        ),
        (
            {
                **contents(("user", [{"text": "hi"}])),
                **FUNCTIONS,
                "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}},
            },
            "only be set when the mode is ANY",
        ),
        (
            {**contents(("user", [{"text": "hi"}])), "generationConfig": {"responseSchema": {"type": "STRING"}}},
            "only supported with",
        ),
    ],
)
def test_gemini_refusals(body: dict, match: str) -> None:
    with pytest.raises(gemini.WireError, match=match):
        gemini.check_body(body)


def test_gemini_plan_calls_allowed_functions_and_answers_json_for_a_schema() -> None:
    forced = {
        **contents(("user", [{"text": "hi"}])),
        **FUNCTIONS,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}},
    }
    assert [name for name, _ in gemini.plan(gemini.check_body(forced), "reply").calls] == ["g"]
    auto = {**contents(("user", [{"text": "hi"}])), **FUNCTIONS}
    assert [name for name, _ in gemini.plan(auto, "reply").calls] == ["f", "g"]
    schema = {
        "type": "OBJECT",
        "properties": {"n": {"type": "INTEGER"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
    }
    asked = {
        **contents(("user", [{"text": "hi"}])),
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    assert gemini.plan(gemini.check_body(asked), "reply").text == '{"n": 1, "tags": ["fake"]}'


def test_schema_values_fit_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "kind": {"enum": ["a", "b"]},
            "n": {"type": ["integer", "null"], "minimum": 3},
            "code": {"type": "string", "minLength": 6},
            "ref": {"$ref": "#/$defs/Item"},
            "either": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "$defs": {"Item": {"type": "object", "properties": {"id": {"const": 7}}, "required": ["id"]}},
    }
    value = example(schema)
    jsonschema.validate(value, schema)
    assert value["n"] == 3 and value["ref"] == {"id": 7} and len(value["code"]) == 6
