"""Anthropic's Messages API: the one place Goblin's chat types and Anthropic's wire format meet.

Wire format: ``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``; the system
prompt is a top-level field, ``max_tokens`` is required, turns alternate user/assistant and hold
content blocks. Streaming is SSE with typed events: ``message_start`` (input usage),
``content_block_start``, ``content_block_delta`` (``text_delta``, ``input_json_delta``),
``content_block_stop``, ``message_delta`` (stop reason, output usage), ``message_stop``, ``ping`` and
``error``.

Translation (OpenAI shape -> Anthropic, and back):

- ``tools`` -> ``tools[].input_schema``; ``tool_choice`` auto/required/named/none -> ``auto``/``any``/
  ``tool``/``none``; ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``.
- An assistant turn's ``tool_calls`` -> ``tool_use`` blocks; ``tool`` messages -> ``tool_result``
  blocks of one user turn (consecutive ones merged, results first as the API requires). Ids pass
  through :func:`~services.router.providers.tool_ids.wire_id`, so ids another provider issued fit.
- Image parts -> ``image`` blocks: a ``data:`` URL as a ``base64`` source, an https URL as a ``url``
  source (Anthropic fetches it; Goblin does not).
- ``response_format`` -> a forced tool whose input is the answer
  (:mod:`~services.router.providers.format_tool` says why).
- Answers: ``tool_use`` blocks -> ``tool_calls`` (streamed: ``content_block_start`` gives the call's id
  and name, each ``input_json_delta`` a piece of its arguments); ``stop_reason: tool_use`` ->
  ``finish_reason: tool_calls``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import (
    NO_OPTIONS,
    ChatOptions,
    ContentPart,
    ToolCall,
    ToolCallDelta,
    decode_data_url,
)
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings, estimate_usage
from services.router.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from services.router.providers.format_tool import ResponseTool, response_tool
from services.router.providers.http import HttpProvider, parse_json
from services.router.providers.tool_ids import arguments_object, wire_id

ANTHROPIC_VERSION = "2023-06-01"
# max_tokens is required; used when neither the request nor the catalog says.
DEFAULT_MAX_TOKENS = 4096
# The API refuses a larger image (decoded bytes), whatever Goblin's own limit.
MAX_IMAGE_BYTES = 5 * 1024 * 1024

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TOOL_CHOICES = {"auto": "auto", "required": "any", "function": "tool", "none": "none"}


# -- request ------------------------------------------------------------------------------------


def image_block(part: ContentPart, where: str) -> dict[str, Any]:
    """An ``image`` block: base64 for a ``data:`` URL, a ``url`` source for https."""
    if part.image_url.startswith("data:"):
        image = decode_data_url(part.image_url, where)
        if len(image.data) > MAX_IMAGE_BYTES:
            raise InvalidArgument(f"{where}: Anthropic models take images of at most 5 MiB")
        return {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.base64}}
    return {"type": "image", "source": {"type": "url", "url": part.image_url}}


def content_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    """A user or assistant message's text and images as blocks; empty text blocks are refused by the
    API, so they are left out."""
    if not message.parts:
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks = []
    for j, part in enumerate(message.parts):
        if part.is_image:
            blocks.append(image_block(part, f"{where}.content[{j}].image_url"))
        elif part.text:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def tool_use_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "tool_use",
            "id": wire_id(call.id),
            "name": call.name,
            "input": arguments_object(call.arguments, f"{where}.tool_calls[{j}].function.arguments"),
        }
        for j, call in enumerate(message.tool_calls)
    ]


def tool_result_block(message: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": wire_id(message.tool_call_id)}
    if message.content:
        block["content"] = message.content
    return block


def anthropic_turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation without its system prompt, as alternating user/assistant turns of blocks."""
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role == "system":
            continue
        if message.role == "tool":
            role, blocks = "user", [tool_result_block(message)]
        elif message.role == "assistant":
            role, blocks = "assistant", content_blocks(message, where) + tool_use_blocks(message, where)
        else:
            role, blocks = "user", content_blocks(message, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # A user turn answering calls must open with its tool_result blocks.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]
    return turns


def tool_fields(options: ChatOptions, fmt_tool: ResponseTool | None) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` for the request's tools, its tool choice and its response format."""
    choice = options.tool_choice
    mode = choice.mode if choice is not None else "auto"
    tools = [
        {"name": t.name, "description": t.description, "input_schema": input_schema(t.parameters, t.name)}
        for t in options.tools
    ]
    for tool in tools:
        if not tool["description"]:
            del tool["description"]
    if fmt_tool is not None:
        if mode == "none":
            tools = []  # the answer must be the JSON, and no other tool may be called
        definition = {"name": fmt_tool.name, "description": fmt_tool.description, "input_schema": fmt_tool.schema}
        if not tools:
            return {"tools": [definition], "tool_choice": {"type": "tool", "name": fmt_tool.name}}
        tools.append(definition)
        if mode == "auto":
            # Call one of the tools, or answer through the format's tool: never plain text.
            mode = "required"
    if not tools:
        return {}
    wire_choice: dict[str, Any] = {"type": TOOL_CHOICES[mode]}
    if mode == "function":
        wire_choice["name"] = choice.function
    if options.parallel_tool_calls is False and mode != "none":
        wire_choice["disable_parallel_tool_use"] = True
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None or options.parallel_tool_calls is False or fmt_tool is not None:
        fields["tool_choice"] = wire_choice
    return fields


def input_schema(parameters: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Anthropic wants an object schema with ``type: object`` spelled out."""
    schema = dict(parameters)
    kind = schema.setdefault("type", "object")
    if kind != "object":
        raise InvalidArgument(f"tools: the parameters of {name!r} must be an object schema for Anthropic models")
    return schema


def messages_body(
    spec: ModelInfo,
    messages: list[Message],
    params: SamplingParams,
    options: ChatOptions = NO_OPTIONS,
    *,
    stream: bool,
) -> dict[str, Any]:
    """The Messages API request for ``messages`` and ``options``."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns = anthropic_turns(messages)
    if not turns:
        raise InvalidArgument("Anthropic models need at least one non-system message with content")
    body: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": params.max_tokens or spec.max_output_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = system
    # Current Claude models accept temperature or top_p, not both; temperature wins. Its range is 0..1.
    if params.temperature is not None and "temperature" not in spec.drop_params:
        body["temperature"] = min(params.temperature, 1.0)
    elif params.top_p is not None and "top_p" not in spec.drop_params:
        body["top_p"] = params.top_p
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    body.update(tool_fields(options, response_tool(options)))
    if stream:
        body["stream"] = True
    return body


# -- answer -------------------------------------------------------------------------------------


def parse_usage(data: Mapping[str, Any] | None) -> tuple[int, int]:
    """(input, output) tokens; cache writes and reads are input tokens too."""
    if not isinstance(data, Mapping):
        return 0, 0
    prompt = sum(
        int(data.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return prompt, int(data.get("output_tokens") or 0)


def parse_content(content: Sequence[Mapping[str, Any]], fmt_tool: ResponseTool | None) -> tuple[str, list[ToolCall]]:
    """(text, tool calls) of a message's content blocks; a call of the format's tool is the answer's
    JSON text, not a call."""
    text, calls = [], []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            if fmt_tool is not None and block["name"] == fmt_tool.name:
                return fmt_tool.answer(block.get("input")), []
            calls.append(ToolCall(id=block["id"], name=block["name"], arguments=json.dumps(block.get("input") or {})))
    return "".join(text), calls


def parse_message(
    provider: str, spec: ModelInfo, messages: list[Message], data: Any, options: ChatOptions = NO_OPTIONS
) -> ChatResult:
    fmt_tool = response_tool(options)
    try:
        if data.get("type") == "error":
            raise event_error(provider, data)
        text, calls = parse_content(data["content"], fmt_tool)
        finish = STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop")
        prompt, completion = parse_usage(data.get("usage"))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a Messages API message") from None
    if finish == "tool_calls" and not calls:
        finish = "stop"  # the format's tool was the answer
    usage = (
        Usage(prompt_tokens=prompt, completion_tokens=completion) if "usage" in data else estimate_usage(messages, text)
    )
    return ChatResult(
        text=text, finish_reason=finish, usage=usage, model=spec.id, provider=provider, tool_calls=tuple(calls)
    )


def event_error(provider: str, data: Mapping[str, Any]) -> ProviderError:
    """The typed error for an ``error`` body or stream event (``{"type": "error", "error": {...}}``)."""
    error = data.get("error") if isinstance(data.get("error"), Mapping) else {}
    kind, message = error.get("type", ""), error.get("message") or "no message"
    if kind == "rate_limit_error":
        return ProviderRateLimited(provider, f"rate limited: {message}")
    if kind in ("authentication_error", "permission_error"):
        return ProviderAuthError(provider, f"the provider refused the configured API key ({kind})")
    if kind == "invalid_request_error":
        return ProviderRejected(provider, f"request refused: {message}")
    return ProviderUnavailable(provider, f"{kind or 'error'}: {message}")


@dataclass
class _Block:
    kind: str  # text | call | format
    index: int = 0  # a call's index among the answer's calls
    pieces: list[str] = field(default_factory=list)  # what was streamed of it


class StreamState:
    """Turns Anthropic's typed stream events into Goblin's deltas: text pieces, and OpenAI-style
    tool-call pieces (the first with the call's index, id and name and empty arguments, then argument
    pieces), or the format tool's input as answer text."""

    def __init__(self, provider: str, fmt_tool: ResponseTool | None) -> None:
        self.provider = provider
        self.fmt_tool = fmt_tool
        self.blocks: dict[int, _Block] = {}
        self.calls = 0
        self.prompt = self.completion = 0
        self.seen_usage = False
        self.finish = ""
        self.stopped = False
        self.streamed: list[str] = []

    def feed(self, kind: str, data: Mapping[str, Any]) -> list[ChatDelta]:
        """The deltas one event gives (often none)."""
        if kind == "content_block_start":
            return self._start(int(data["index"]), data["content_block"])
        if kind == "content_block_delta":
            return self._delta(self.blocks.get(int(data["index"])), data["delta"])
        if kind == "content_block_stop":
            return self._stop(self.blocks.get(int(data["index"])))
        if kind == "message_start":
            message = data.get("message") or {}
            if "usage" in message:
                self.prompt, self.completion = parse_usage(message["usage"])
                self.seen_usage = True
        elif kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish = STOP_REASONS.get(reason, "stop")
            if "usage" in data:
                later_prompt, self.completion = parse_usage(data["usage"])
                self.prompt = later_prompt or self.prompt
                self.seen_usage = True
        elif kind == "message_stop":
            self.stopped = True
        return []

    def _start(self, index: int, block: Mapping[str, Any]) -> list[ChatDelta]:
        if block.get("type") == "tool_use":
            if self.fmt_tool is not None and block["name"] == self.fmt_tool.name:
                self.blocks[index] = _Block("format")
                return []
            call = _Block("call", self.calls)
            self.blocks[index] = call
            self.calls += 1
            return [ChatDelta(tool_calls=(ToolCallDelta(index=call.index, id=block["id"], name=block["name"]),))]
        if block.get("type") == "text":
            self.blocks[index] = _Block("text")
            return self._text(block.get("text") or "")
        return []  # thinking and server-tool blocks are not part of the answer

    def _delta(self, block: _Block | None, delta: Mapping[str, Any]) -> list[ChatDelta]:
        if block is None:
            return []
        if delta.get("type") == "text_delta" and block.kind == "text":
            return self._text(delta.get("text") or "")
        if delta.get("type") != "input_json_delta" or not delta.get("partial_json"):
            return []
        piece = delta["partial_json"]
        block.pieces.append(piece)
        self.streamed.append(piece)
        if block.kind == "call":
            return [ChatDelta(tool_calls=(ToolCallDelta(index=block.index, arguments=piece),))]
        if block.kind == "format" and not self.fmt_tool.wrapped:
            return [ChatDelta(text=piece)]
        return []  # a wrapped answer is unwrapped whole when its block ends

    def _stop(self, block: _Block | None) -> list[ChatDelta]:
        if block is None or block.kind == "text":
            return []
        if block.kind == "call":
            # A call without arguments streams no input pieces; its arguments are still a JSON object.
            return [] if block.pieces else [ChatDelta(tool_calls=(ToolCallDelta(index=block.index, arguments="{}"),))]
        if self.fmt_tool.wrapped:
            return self._text(self.fmt_tool.answer(json.loads("".join(block.pieces) or "{}")))
        return [] if block.pieces else self._text("{}")

    def _text(self, text: str) -> list[ChatDelta]:
        if not text:
            return []
        self.streamed.append(text)
        return [ChatDelta(text=text)]

    def last(self, messages: list[Message]) -> ChatDelta:
        """The closing delta: finish reason and usage."""
        finish = self.finish or "stop"
        if finish == "tool_calls" and not self.calls:
            finish = "stop"  # the format's tool was the answer
        usage = (
            Usage(prompt_tokens=self.prompt, completion_tokens=self.completion)
            if self.seen_usage
            else estimate_usage(messages, "".join(self.streamed))
        )
        return ChatDelta(finish_reason=finish, usage=usage)


class AnthropicProvider(HttpProvider):
    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key or "", "anthropic-version": ANTHROPIC_VERSION}

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        data = await self.post_json("/v1/messages", messages_body(spec, messages, params, options, stream=False))
        return parse_message(self.name, spec, messages, data, options)

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        state = StreamState(self.name, response_tool(options))
        body = messages_body(spec, messages, params, options, stream=True)
        async with self.post_sse("/v1/messages", body) as events:
            async for event in events:
                data = parse_json(self.name, event.data)
                if not isinstance(data, Mapping):
                    raise ProviderBadResponse(self.name, "a stream event is not an object")
                kind = data.get("type") or event.event
                if kind == "error":
                    raise event_error(self.name, data)
                try:
                    for delta in state.feed(kind, data):
                        yield delta
                except (KeyError, TypeError, AttributeError, ValueError):
                    raise ProviderBadResponse(self.name, f"a {kind} event is not as documented") from None
                if state.stopped:
                    break
        if not state.stopped:
            raise ProviderUnavailable(self.name, "the stream ended before message_stop")
        yield state.last(messages)

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        raise InvalidArgument(f"{self.name} has no embeddings API")
