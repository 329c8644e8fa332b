"""``response_format`` carried by a tool, for providers that constrain an answer to a schema through a
tool's input better than (or, with tools, instead of) through their own JSON mode.

Anthropic's one way to constrain an answer to a JSON Schema that every Claude model with tools
supports is a tool: its ``input_schema`` is the schema and ``tool_choice`` forces the call, so the
call's input is the answer (Anthropic's documented advice for JSON output; its newer ``output_format``
structured outputs are a beta for a few recent models). Gemini has a JSON mode (``responseSchema``)
but, before Gemini 3, not together with function calling: a request with both tools and a schema
uses this tool there too. With other tools the provider is told to call *some* tool: the model calls
one of the request's tools, or answers through this one, never with free text, which is what
OpenAI's ``response_format`` promises of the final answer. The call's input comes back as the
answer's text, and ``finish_reason`` is ``stop``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common.chat_content import ChatOptions

FORMAT_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the whole answer, a JSON value that "
    "follows the input schema exactly."
)
JSON_OBJECT_TOOL = "json_answer"


@dataclass(frozen=True, eq=False)
class ResponseTool:
    """The tool that carries a ``response_format`` answer. ``wrapped``: the schema is not an object
    (tool inputs must be), so the answer travels as ``{"value": ...}``."""

    name: str
    schema: dict[str, Any]
    wrapped: bool = False
    description: str = FORMAT_TOOL_DESCRIPTION

    def answer(self, value: Any) -> str:
        """The answer's JSON text from the tool call's input."""
        if self.wrapped:
            value = value.get("value") if isinstance(value, Mapping) else None
        return json.dumps(value if value is not None else {})


def response_tool(options: ChatOptions) -> ResponseTool | None:
    """The tool for ``options.response_format`` (None when the answer is free text). Its name is the
    format's, made distinct from the request's own tools."""
    fmt = options.response_format
    if fmt is None or fmt.type not in ("json_object", "json_schema"):
        return None
    schema: dict[str, Any] = dict(fmt.schema or {}) if fmt.type == "json_schema" else {"type": "object"}
    name = fmt.name if fmt.type == "json_schema" else JSON_OBJECT_TOOL
    if any(tool.name == name for tool in options.tools):
        name = f"{name[:57]}_answer"
    wrapped = schema.get("type") != "object"
    if wrapped:
        defs = {k: schema.pop(k) for k in ("$defs", "definitions") if k in schema}
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"], **defs}
    return ResponseTool(name=name, schema=schema, wrapped=wrapped)
