"""The fake Anthropic Messages API's checks and answers (:mod:`goblin_tools.fakes.providers` serves them).

It refuses what the real API refuses, with its error body (``invalid_request_error`` and a message in
its style): unknown fields, bad roles, empty text blocks, malformed ``image`` sources, ``tool_use``
outside assistant turns or with a bad id, ``tool_result`` outside user turns, not first in its turn,
or answering no ``tool_use`` of the previous turn, a ``tool_use`` left unanswered, tools with a bad
name or a non-object ``input_schema``, and a ``tool_choice`` naming no tool.

Answers are deterministic and driven by the request: when a tool must or may be called (``tool`` ->
that tool; ``any`` -> the first tool, or the last one once tool results came back, which is where an
OpenAI-style gateway puts its response-format tool; ``auto`` -> the first tool or two, unless the
last turn brought tool results), the answer is ``tool_use`` blocks whose input fits the tool's schema;
after tool results it is text quoting them; otherwise the fake's reply text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from goblin_tools.fakes.schema_values import example

FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_CHOICE_TYPES = {"auto", "any", "tool", "none"}


class WireError(Exception):
    """A request the real API refuses: HTTP ``status`` with an error of ``kind``."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def blocks(content: Any) -> list[Mapping[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def check_body(body: Any) -> dict[str, Any]:
    """``body`` if the Messages API would take it; else WireError."""
    if not isinstance(body, dict):
        raise WireError("request body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise WireError(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("max_tokens"), int):
        raise WireError("max_tokens: Field required")
    if "system" in body and not isinstance(body["system"], str | list):
        raise WireError("system: Input should be a valid string")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise WireError("temperature: Input should be less than or equal to 1")
    if "temperature" in body and "top_p" in body:
        raise WireError("`temperature` and `top_p` cannot both be specified for this model.")
    names = _check_tools(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("messages: at least one message is required")
    unanswered: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise WireError(f'messages.{i}.role: Input should be "user" or "assistant"')
        content = message.get("content")
        if not content or not isinstance(content, str | list):
            raise WireError(f"messages.{i}: text content blocks must be non-empty")
        unanswered = _check_turn(i, message["role"], blocks(content), unanswered, names)
    return body


def _check_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    if tools is None:
        if "tool_choice" in body:
            raise WireError("tool_choice: may only be specified while providing tools")
        return set()
    if not isinstance(tools, list):
        raise WireError("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or set(tool) - {"name", "description", "input_schema", "cache_control"}:
            raise WireError(f"tools.{i}.custom: Extra inputs are not permitted")
        if not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
            raise WireError(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if tool["name"] in names:
            raise WireError("tools: Tool names must be unique.")
        names.add(tool["name"])
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise WireError(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICE_TYPES:
            raise WireError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise WireError(f"tool_choice.name: tool {str(choice.get('name'))[:64]!r} not found in tools")
        if set(choice) - {"type", "name", "disable_parallel_tool_use"}:
            raise WireError("tool_choice: Extra inputs are not permitted")
    return names


def _check_turn(i: int, role: str, content: list, unanswered: set[str], names: set[str]) -> set[str]:
    """Check one turn's blocks; the tool_use ids it leaves for the next turn to answer."""
    results: set[str] = set()
    calls: set[str] = set()
    seen_other = False
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not isinstance(block.get("text"), str) or not block["text"]:
                raise WireError(f"{where}: text content blocks must be non-empty")
        elif kind == "image":
            if role != "user":
                raise WireError(f"{where}: image blocks are only allowed in user messages")
            _check_image(where, block.get("source"))
        elif kind == "tool_use":
            if role != "assistant":
                raise WireError(f"{where}: tool_use blocks are only allowed in assistant messages")
            if not isinstance(block.get("id"), str) or not TOOL_ID.match(block["id"]):
                raise WireError(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
                raise WireError(f"{where}: tool_use blocks need a name and an input object")
            calls.add(block["id"])
        elif kind == "tool_result":
            if role != "user":
                raise WireError(f"{where}: tool_result blocks are only allowed in user messages")
            if seen_other:
                raise WireError(f"messages.{i}: tool_result blocks must come first in the content of a user message")
            if block.get("tool_use_id") not in unanswered:
                raise WireError(
                    f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {block.get('tool_use_id')}. "
                    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                )
            if "content" in block and not isinstance(block["content"], str | list):
                raise WireError(f"{where}.content: Input should be a valid string or list")
            results.add(block["tool_use_id"])
        else:
            raise WireError(f"{where}.type: Input tag {str(kind)[:40]!r} does not match any of the expected tags")
        seen_other = seen_other or kind != "tool_result"
    if unanswered - results:
        raise WireError(
            f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(sorted(unanswered - results))}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message."
        )
    return calls


def _check_image(where: str, source: Any) -> None:
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise WireError(f"{where}.source.type: Input should be 'base64' or 'url'")
    if source["type"] == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith("https://"):
            raise WireError(f"{where}.source.url: Only HTTPS URLs are supported")
        return
    if source.get("media_type") not in MEDIA_TYPES:
        raise WireError(
            f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        )
    try:
        base64.b64decode(source.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{where}.source.data: The image data is not valid base64") from None


@dataclass
class Plan:
    """What the fake answers: tool calls (id, name, input) or text."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.calls else "end_turn"


def tool_results(body: Mapping[str, Any]) -> list[str]:
    """The text of the tool results the last turn brought."""
    last = body["messages"][-1]
    found = []
    for block in blocks(last["content"]) if last["role"] == "user" else ():
        if block.get("type") == "tool_result":
            content = block.get("content", "")
            found.append(content if isinstance(content, str) else "".join(b.get("text", "") for b in content))
    return found


def plan(body: Mapping[str, Any], reply: str) -> Plan:
    """The deterministic answer to a checked ``body`` (see the module's doc)."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    results = tool_results(body)
    chosen: list[Mapping[str, Any]] = []
    if tools and choice["type"] == "tool":
        chosen = [t for t in tools if t["name"] == choice["name"]]
    elif tools and choice["type"] == "any":
        chosen = [tools[-1] if results else tools[0]]
    elif tools and choice["type"] == "auto" and not results:
        chosen = tools[:1] if choice.get("disable_parallel_tool_use") else tools[:2]
    if chosen:
        return Plan(calls=[(f"toolu_{uuid.uuid4().hex[:20]}", t["name"], example(t["input_schema"])) for t in chosen])
    if results:
        return Plan(text="The tools said: " + "; ".join(results))
    return Plan(text=reply)


def content(plan: Plan, pieces: list[str]) -> list[dict[str, Any]]:
    """The answer's content blocks (``pieces``: the text answer, a token each)."""
    if plan.calls:
        return [{"type": "tool_use", "id": i, "name": n, "input": args} for i, n, args in plan.calls]
    return [{"type": "text", "text": "".join(pieces)}]


def stream_blocks(plan: Plan, pieces: list[str]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each block's ``content_block_start`` payload and its deltas, as the real API streams them
    (a tool's input as ``input_json_delta`` pieces, the first one empty)."""
    if not plan.calls:
        return [({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces])]
    streamed = []
    for call_id, name, args in plan.calls:
        text = json.dumps(args)
        cut = [0, len(text) // 3, 2 * len(text) // 3, len(text)]
        parts = [""] + [text[a:b] for a, b in zip(cut, cut[1:], strict=False) if b > a]
        start = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        streamed.append((start, [{"type": "input_json_delta", "partial_json": p} for p in parts]))
    return streamed


def prompt_words(body: Mapping[str, Any]) -> int:
    """The request's size in words, the fake's token count."""
    system = body.get("system") or ""
    total = len(system.split()) if isinstance(system, str) else 0
    for message in body["messages"]:
        for block in blocks(message["content"]):
            total += len(str(block.get("text") or block.get("content") or block.get("input") or "").split())
    return total
