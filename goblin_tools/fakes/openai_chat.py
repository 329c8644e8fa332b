"""The fake OpenAI Chat Completions' checks of tools, content parts, response formats and logprobs, and
its deterministic answers to them (used by :mod:`goblin_tools.fakes.providers`).

It checks the shape the real API checks, answering what it refuses with OpenAI's error body; and it
answers from the request alone: with tools (and ``tool_choice`` not ``none``) and a conversation whose
last message is not a tool result, it calls the named tool (else the first) with arguments built from
the tool's JSON Schema (so they validate); with ``response_format`` it answers JSON (an instance of the
schema for ``json_schema``); with ``logprobs`` each answer piece gets a log probability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROLES = {"system", "developer", "user", "assistant", "tool"}
CHAT_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
}


class Refused(Exception):
    """A request the real API answers with 400 ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
        raise Refused(f"Invalid content part at '{where}'", where)
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise Refused(f"Missing required parameter: '{where}.text'.", where)
    if part["type"] == "image_url":
        url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "data:image/")):
            raise Refused(f"Invalid image URL at '{where}.image_url.url'.", where)


def check_messages(messages: Any) -> None:
    """Roles, content (text, null with tool calls, or parts), tool calls and tool answers."""
    if not isinstance(messages, list) or not messages:
        raise Refused("'messages' must contain at least one message", "messages")
    calls: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Refused(f"Invalid value for '{where}.role'", where)
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"{where}.content[{j}]")
        elif content is None:
            if not (m["role"] == "assistant" and m.get("tool_calls")):
                raise Refused(f"Invalid value for '{where}.content': expected a string, got null.", where)
        elif not isinstance(content, str):
            raise Refused(f"Invalid value for '{where}.content'", where)
        if "tool_calls" in m:
            if m["role"] != "assistant" or not isinstance(m["tool_calls"], list):
                raise Refused(f"Invalid value for '{where}.tool_calls'", where)
            for call in m["tool_calls"]:
                function = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(call, dict)
                    or call.get("type") != "function"
                    or not isinstance(call.get("id"), str)
                    or not isinstance(function, dict)
                    or not isinstance(function.get("name"), str)
                    or not isinstance(function.get("arguments"), str)
                ):
                    raise Refused(f"Invalid value for '{where}.tool_calls'", where)
                calls.add(call["id"])
        if m["role"] == "tool":
            if m.get("tool_call_id") not in calls:
                raise Refused(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"{where}.role",
                )


def check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    names = []
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise Refused("Invalid 'tools': empty array. Expected an array with minimum length 1.", "tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                raise Refused(f"Invalid value for 'tools[{i}]'", f"tools[{i}]")
            if not isinstance(function.get("name"), str):
                raise Refused(f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}]")
            parameters = function.get("parameters", {})
            if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
                raise Refused(f"Invalid schema for function '{function['name']}'", f"tools[{i}].function.parameters")
            names.append(function["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if tools is None:
            raise Refused("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
        if isinstance(choice, dict):
            if (choice.get("function") or {}).get("name") not in names:
                raise Refused("Invalid value for 'tool_choice': no function with that name in 'tools'.", "tool_choice")
        elif choice not in ("none", "auto", "required"):
            raise Refused("Invalid value for 'tool_choice'", "tool_choice")
    if "parallel_tool_calls" in body and tools is None:
        raise Refused("Invalid value for 'parallel_tool_calls': only allowed when 'tools' are specified.")


def check_format(body: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise Refused("Invalid value for 'response_format.type'", "response_format")
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise Refused("Missing required parameter: 'response_format.json_schema.name'.", "response_format")
        if not isinstance(spec.get("schema", {}), dict):
            raise Refused("Invalid schema for response_format", "response_format")
    if fmt["type"] == "json_object":
        text = json.dumps(body.get("messages")).lower()
        if "json" not in text:
            raise Refused(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                "messages",
            )


def check_sampling(body: dict[str, Any]) -> None:
    if body.get("top_logprobs") is not None:
        if not body.get("logprobs"):
            raise Refused("Invalid value for 'top_logprobs': 'logprobs' must be true.", "top_logprobs")
        if not 0 <= body["top_logprobs"] <= 20:
            raise Refused("Invalid 'top_logprobs': integer above maximum value.", "top_logprobs")
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict) or not all(k.isdigit() and -100 <= v <= 100 for k, v in bias.items()):
            raise Refused("Invalid 'logit_bias'", "logit_bias")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) is not None and not -2 <= body[name] <= 2:
            raise Refused(f"Invalid '{name}'", name)


def check_chat(body: dict[str, Any]) -> None:
    """Every check beyond auth and the model name; :class:`Refused` names the first problem."""
    check_messages(body.get("messages"))
    check_tools(body)
    check_format(body)
    check_sampling(body)


# -- answers --------------------------------------------------------------------------------------


def example(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid for ``schema`` (the subset tools and pydantic models use), deterministic."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return example(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example(options[0], defs, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(sub, defs, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [example(schema.get("items", {"type": "string"}), defs, depth + 1) for _ in range(count)]
    if kind == "string":
        return "x" * max(schema.get("minLength", 0), 1) if schema.get("minLength") else "fake"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return None


@dataclass
class Answer:
    """What the fake answers: text pieces (one a token), tool calls, or both empty."""

    pieces: list[str]
    finish: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0

    def logprob_items(self, pieces: list[str]) -> list[dict[str, Any]]:
        items = []
        for i, piece in enumerate(pieces):
            value = -0.01 * (i + 1)
            top = [{"token": piece, "logprob": value, "bytes": list(piece.encode())}]
            top += [
                {"token": f"alt{k}", "logprob": value - k, "bytes": list(f"alt{k}".encode())}
                for k in range(1, self.top_logprobs)
            ]
            items.append(
                {
                    "token": piece,
                    "logprob": value,
                    "bytes": list(piece.encode()),
                    "top_logprobs": top[: self.top_logprobs],
                }
            )
        return items


def answer(body: dict[str, Any], pieces: list[str], finish: str) -> Answer:
    """The fake's answer to ``body`` (checked), given its usual text ``pieces``."""
    logprobs, top = bool(body.get("logprobs")), int(body.get("top_logprobs") or 0)
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    last = body["messages"][-1]
    if tools and choice != "none" and last.get("role") != "tool":
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        tool = next((t for t in tools if t["function"]["name"] == named), tools[0])["function"]
        arguments = json.dumps(example(tool.get("parameters", {"type": "object"})), separators=(",", ":"))
        seq = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        call = {
            "id": f"call_fake{seq}_0",
            "type": "function",
            "function": {"name": tool["name"], "arguments": arguments},
        }
        return Answer([], "tool_calls", [call], logprobs, top)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        text = json.dumps(example(fmt["json_schema"].get("schema", {"type": "object"})))
        return Answer(split(text), "stop", [], logprobs, top)
    if fmt.get("type") == "json_object":
        return Answer(split(json.dumps({"answer": "".join(pieces)})), "stop", [], logprobs, top)
    return Answer(pieces, finish, [], logprobs, top)


def split(text: str, size: int = 8) -> list[str]:
    """``text`` in pieces as a stream sends them."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def tool_call_fragments(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The streamed ``delta.tool_calls`` of ``calls`` as OpenAI sends them: per call, a first fragment
    (index, id, type, name, empty arguments), then the arguments in pieces."""
    fragments = []
    for index, call in enumerate(calls):
        first = {"name": call["function"]["name"], "arguments": ""}
        fragments.append({"index": index, "id": call["id"], "type": "function", "function": first})
        for piece in split(call["function"]["arguments"], 5):
            fragments.append({"index": index, "function": {"arguments": piece}})
    return fragments
