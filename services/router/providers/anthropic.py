"""Anthropic's Messages API.

Wire format: ``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``; the system
prompt is a top-level field, ``max_tokens`` is required, turns alternate user/assistant. Streaming is
SSE with typed events: ``message_start`` (input usage), ``content_block_start``,
``content_block_delta`` (``text_delta``), ``content_block_stop``, ``message_delta`` (stop reason,
output usage), ``message_stop``, ``ping`` and ``error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions
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
from services.router.providers.http import HttpProvider, parse_json

ANTHROPIC_VERSION = "2023-06-01"
# max_tokens is required; used when neither the request nor the catalog says.
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def messages_body(spec: ModelInfo, messages: list[Message], params: SamplingParams, *, stream: bool) -> dict[str, Any]:
    """The Messages API request for ``messages``."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns = [
        {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
        for m in messages
        if m.role != "system" and m.content  # the API refuses empty text blocks
    ]
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
    if stream:
        body["stream"] = True
    return body


def parse_usage(data: Mapping[str, Any] | None) -> tuple[int, int]:
    """(input, output) tokens; cache writes and reads are input tokens too."""
    if not isinstance(data, Mapping):
        return 0, 0
    prompt = sum(
        int(data.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return prompt, int(data.get("output_tokens") or 0)


def parse_message(provider: str, spec: ModelInfo, messages: list[Message], data: Any) -> ChatResult:
    try:
        if data.get("type") == "error":
            raise event_error(provider, data)
        text = "".join(block.get("text", "") for block in data["content"] if block.get("type") == "text")
        finish = STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop")
        prompt, completion = parse_usage(data.get("usage"))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a Messages API message") from None
    usage = (
        Usage(prompt_tokens=prompt, completion_tokens=completion) if "usage" in data else estimate_usage(messages, text)
    )
    return ChatResult(text=text, finish_reason=finish, usage=usage, model=spec.id, provider=provider)


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
        data = await self.post_json("/v1/messages", messages_body(spec, messages, params, stream=False))
        return parse_message(self.name, spec, messages, data)

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        prompt = completion = 0
        finish, seen_usage, stopped, text = "", False, False, []
        async with self.post_sse("/v1/messages", messages_body(spec, messages, params, stream=True)) as events:
            async for event in events:
                data = parse_json(self.name, event.data)
                if not isinstance(data, Mapping):
                    raise ProviderBadResponse(self.name, "a stream event is not an object")
                kind = data.get("type") or event.event
                if kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        text.append(delta["text"])
                        yield ChatDelta(text=delta["text"])
                elif kind == "message_start":
                    message = data.get("message") or {}
                    if "usage" in message:
                        prompt, completion = parse_usage(message["usage"])
                        seen_usage = True
                elif kind == "message_delta":
                    reason = (data.get("delta") or {}).get("stop_reason")
                    if reason:
                        finish = STOP_REASONS.get(reason, "stop")
                    if "usage" in data:
                        later_prompt, completion = parse_usage(data["usage"])
                        prompt = later_prompt or prompt
                        seen_usage = True
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    raise event_error(self.name, data)
        if not stopped:
            raise ProviderUnavailable(self.name, "the stream ended before message_stop")
        usage = (
            Usage(prompt_tokens=prompt, completion_tokens=completion)
            if seen_usage
            else estimate_usage(messages, "".join(text))
        )
        yield ChatDelta(finish_reason=finish or "stop", usage=usage)

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        raise InvalidArgument(f"{self.name} has no embeddings API")
