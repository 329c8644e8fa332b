"""The turns a chat template renders: a request's messages, tool turns included, and what the model
must be told about the shape the grammar will hold it to.

Most small models' templates (SmolLM2's among them) know only ``role`` and ``content``. So an assistant
turn that called tools shows its calls as the JSON the tool grammar makes the model write
(``{"name": ..., "arguments": ...}``), and a tool's answer is a ``tool`` turn when the template mentions
that role, else a ``user`` turn that says which call it answers. A request under a grammar gets a
system instruction describing the tools or the schema: the grammar guarantees the shape, but the model
writes better values when it knows what they are for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.common.chat import Message, check_messages
from services.common.chat_content import ChatOptions, Tool
from services.inference.engine.grammar import Constraint


def template_turns(
    messages: Sequence[Message], options: ChatOptions, constraint: Constraint | None, *, tool_role: bool
) -> list[dict[str, str]]:
    """``messages`` (checked) as the plain dicts a chat template iterates over. ``tool_role``: whether
    the template has a ``tool`` role of its own."""
    check_messages(messages)
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    turns = []
    for message in messages:
        if message.role == "tool":
            if tool_role:
                turns.append({"role": "tool", "content": message.content})
            else:
                name = names.get(message.tool_call_id, "")
                turns.append(
                    {"role": "user", "content": f"Result of {name} (call {message.tool_call_id}):\n{message.content}"}
                )
        elif message.tool_calls:
            calls = "\n".join(
                json.dumps({"name": c.name, "arguments": _arguments(c.arguments)}) for c in message.tool_calls
            )
            content = f"{message.content}\n{calls}" if message.content else calls
            turns.append({"role": "assistant", "content": content})
        else:
            turns.append({"role": message.role, "content": message.content})
    instruction = _instruction(options, constraint)
    if instruction:
        if turns and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{instruction}"}
        else:
            turns.insert(0, {"role": "system", "content": instruction})
    return turns


def _arguments(text: str) -> object:
    """A call's arguments as JSON when they are, else as the text the model wrote."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _instruction(options: ChatOptions, constraint: Constraint | None) -> str:
    if constraint is None:
        return ""
    if constraint.is_tool_call:
        tools = [t for t in options.tools if t.name in constraint.tools]
        listing = "\n".join(_describe(tool) for tool in tools)
        return (
            "Call one of these functions by answering with JSON "
            '{"name": <function name>, "arguments": <arguments object>}.\n' + listing
        )
    schema = options.json_schema
    if schema is not None:
        return "Answer with a JSON value that follows this JSON Schema:\n" + json.dumps(schema)
    return "Answer with a JSON object."


def _describe(tool: Tool) -> str:
    description = f": {tool.description}" if tool.description else ""
    return f"- {tool.name}{description}\n  parameters (JSON Schema): {json.dumps(tool.parameters)}"
