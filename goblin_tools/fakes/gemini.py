"""The fake Gemini generateContent API's checks and answers (:mod:`goblin_tools.fakes.providers` serves
them).

It refuses what the real API refuses, with its error body (``INVALID_ARGUMENT`` and a message in its
style): unknown fields anywhere (the API parses bodies against its protos), a part without exactly one
kind of data, ``inlineData`` that is not base64 or not an image, ``functionCall`` outside model turns,
``functionResponse`` outside user turns or not answering, one for one and in order, the calls of the
previous model turn, function declarations whose schema leaves Gemini's OpenAPI subset (``$ref``,
``additionalProperties``, ``const``, lower-case JSON Schema only keys...) or declares an OBJECT without
properties, a ``toolConfig`` with a bad mode or ``allowedFunctionNames`` outside mode ANY, and a
``responseSchema`` without ``responseMimeType: application/json``.

Answers are deterministic and driven by the request: with mode ANY, a call of the first function
(of ``allowedFunctionNames`` if set), or of the last one once function responses came back; with AUTO
and no responses yet, calls of the first two functions; the calls' args fit their schema. Otherwise,
with ``responseMimeType: application/json``, JSON fitting ``responseSchema``; after function
responses, text quoting them; else the fake's reply text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from goblin_tools.fakes.schema_values import example

TOP_FIELDS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig"}
CONFIG_FIELDS = {
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "seed",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
}
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
PART_FIELDS = {*PART_DATA, "thought", "thoughtSignature"}
SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
MODES = {"AUTO", "ANY", "NONE", "VALIDATED"}
MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"}


class WireError(Exception):
    """A request the real API refuses with 400 INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def unknown(name: str, where: str) -> WireError:
    return WireError(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")


def check_body(body: Any) -> dict[str, Any]:
    """``body`` if generateContent would take it; else WireError."""
    if not isinstance(body, dict):
        raise WireError("Invalid JSON payload received.")
    for name in set(body) - TOP_FIELDS:
        raise unknown(name, "")
    declared = _check_tools(body)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise WireError("* GenerateContentRequest.contents: contents is not specified")
    calls: list[str] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise WireError(f"Please use a valid role: user, model. (contents[{i}])")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise WireError(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        calls = _check_parts(i, content["role"], parts, calls, declared)
    config = body.get("generationConfig") or {}
    for name in set(config) - CONFIG_FIELDS:
        raise unknown(name, "generation_config")
    if "responseMimeType" in config and config["responseMimeType"] not in MIME_TYPES:
        raise WireError(
            "* GenerateContentRequest.generation_config.response_mime_type: "
            f"unsupported mime type {config['responseMimeType']!r}"
        )
    if "responseSchema" in config:
        if config.get("responseMimeType") not in ("application/json", "text/x.enum"):
            raise WireError(
                "* GenerateContentRequest.generation_config.response_schema: only supported with "
                "response_mime_type application/json or text/x.enum"
            )
        check_schema(config["responseSchema"], "generation_config.response_schema")
    return body


def _check_tools(body: dict[str, Any]) -> set[str]:
    declared: set[str] = set()
    for i, tool in enumerate(body.get("tools") or []):
        for name in set(tool) - {"functionDeclarations"}:
            raise unknown(name, f"tools[{i}]")
        for j, declaration in enumerate(tool.get("functionDeclarations") or []):
            where = f"tools[{i}].function_declarations[{j}]"
            for name in set(declaration) - {"name", "description", "parameters"}:
                raise unknown(name, where)
            if not FUNCTION_NAME.match(str(declaration.get("name", ""))):
                raise WireError(f"* GenerateContentRequest.{where}.name: Invalid function name.")
            declared.add(declaration["name"])
            if "parameters" in declaration:
                check_schema(declaration["parameters"], f"{where}.parameters")
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if config is not None:
        if config.get("mode", "AUTO") not in MODES:
            raise WireError(f"Invalid value at 'tool_config.function_calling_config.mode': {config.get('mode')!r}")
        allowed = config.get("allowedFunctionNames")
        if allowed is not None:
            if config.get("mode") not in ("ANY", "VALIDATED"):
                raise WireError("allowed_function_names should only be set when the mode is ANY or VALIDATED.")
            if not set(allowed) <= declared:
                raise WireError("allowed_function_names must name declared functions.")
    return declared


def check_schema(schema: Any, where: str) -> None:
    """Raise WireError unless ``schema`` is in Gemini's OpenAPI subset."""
    if not isinstance(schema, dict):
        raise WireError(f"Invalid value at '{where}': a schema must be an object")
    for name in set(schema) - SCHEMA_FIELDS:
        raise unknown(name, where)
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in SCHEMA_TYPES):
        raise WireError(
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), {kind!r}"
        )
    if isinstance(kind, str) and kind.upper() == "OBJECT" and not schema.get("properties") and "anyOf" not in schema:
        raise WireError(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type")
    if isinstance(kind, str) and kind.upper() == "ARRAY" and "items" not in schema:
        raise WireError(f"* GenerateContentRequest.{where}.items: missing field.")
    if "enum" in schema and not all(isinstance(v, str) for v in schema["enum"]):
        raise WireError(f"Invalid value at '{where}.enum': enum values must be strings")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties[{name}]")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or []):
        check_schema(sub, f"{where}.any_of[{k}]")


def _check_parts(i: int, role: str, parts: list, previous_calls: list[str], declared: set[str]) -> list[str]:
    """Check one turn's parts; the function calls it makes (for the next turn to answer)."""
    calls, responses = [], []
    for j, part in enumerate(parts):
        where = f"contents[{i}].parts[{j}]"
        if not isinstance(part, dict):
            raise WireError(f"Invalid value at '{where}'")
        for name in set(part) - PART_FIELDS:
            raise unknown(name, where)
        data = [k for k in PART_DATA if k in part]
        if len(data) != 1:
            raise WireError(
                f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field"
            )
        kind = data[0]
        if kind == "text" and not isinstance(part["text"], str):
            raise WireError(f"Invalid value at '{where}.text'")
        if kind == "inlineData":
            inline = part["inlineData"]
            if not isinstance(inline, dict) or inline.get("mimeType") not in IMAGE_TYPES:
                raise WireError(f"* GenerateContentRequest.{where}.inline_data.mime_type: Unsupported MIME type")
            try:
                base64.b64decode(inline.get("data") or "", validate=True)
            except (binascii.Error, ValueError):
                raise WireError(
                    f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                ) from None
        if kind == "functionCall":
            call = part["functionCall"]
            if role != "model":
                raise WireError(f"* GenerateContentRequest.{where}: function call turn must come from the model")
            if not isinstance(call, dict) or not isinstance(call.get("args", {}), dict) or not call.get("name"):
                raise WireError(f"Invalid value at '{where}.function_call'")
            calls.append(call["name"])
        if kind == "functionResponse":
            response = part["functionResponse"]
            if role != "user":
                raise WireError(f"* GenerateContentRequest.{where}: function response turn must come from the user")
            if not isinstance(response, dict) or not isinstance(response.get("response"), dict):
                raise WireError(f"Invalid value at '{where}.function_response.response': a JSON object is required")
            responses.append(response.get("name"))
    if responses and responses != previous_calls:
        raise WireError(
            "Please ensure that the number of function response parts is equal to the number of function call "
            "parts of the function call turn."
        )
    return calls


@dataclass
class Plan:
    """What the fake answers: function calls (name, args) or text."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""


def function_responses(body: Mapping[str, Any]) -> list[Any]:
    last = body["contents"][-1]
    if last["role"] != "user":
        return []
    return [p["functionResponse"]["response"] for p in last["parts"] if "functionResponse" in p]


def plan(body: Mapping[str, Any], reply: str) -> Plan:
    """The deterministic answer to a checked ``body`` (see the module's doc)."""
    declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    responses = function_responses(body)
    allowed = config.get("allowedFunctionNames")
    callable_ = [d for d in declarations if d["name"] in allowed] if allowed else declarations
    chosen: list[Mapping[str, Any]] = []
    if callable_ and mode == "ANY":
        # A call is a must: the first function, or the last once answers came back (where an
        # OpenAI-style gateway puts its response-format function).
        chosen = [callable_[-1] if responses else callable_[0]]
    elif callable_ and mode == "AUTO" and not responses:
        chosen = callable_[:2]
    if chosen:
        return Plan(calls=[(d["name"], example(d.get("parameters") or {"type": "OBJECT"})) for d in chosen])
    generation = body.get("generationConfig") or {}
    if generation.get("responseMimeType") == "application/json":
        return Plan(text=json.dumps(example(generation.get("responseSchema") or {"type": "OBJECT"})))
    if responses:
        return Plan(text="The tools said: " + "; ".join(json.dumps(r) for r in responses))
    return Plan(text=reply)


def prompt_words(body: Mapping[str, Any]) -> int:
    """The request's size in words, the fake's token count."""
    system = " ".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", []))
    total = len(system.split())
    for content in body["contents"]:
        for part in content["parts"]:
            total += len(
                str(part.get("text") or part.get("functionCall") or part.get("functionResponse") or "").split()
            )
    return total
