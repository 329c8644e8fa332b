"""OpenAI's Chat Completions and Embeddings APIs, and every provider that speaks them (DeepSeek, xAI
Grok, Moonshot, SiliconFlow, any OpenAI-compatible endpoint declared in the catalog).

Wire format: ``POST {base}/chat/completions`` with ``Authorization: Bearer``; streaming is SSE of
``chat.completion.chunk`` objects ending with ``data: [DONE]``, usage in a last chunk when
``stream_options.include_usage`` is set (Moonshot puts it in the finishing choice instead).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings, estimate_tokens, estimate_usage
from services.router.providers.errors import ProviderBadResponse, ProviderError, ProviderUnavailable
from services.router.providers.http import HttpOptions, HttpProvider, parse_json

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "insufficient_system_resource": "length",  # DeepSeek: the answer was cut short
}


def openai_messages(messages: list[Message]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        # Tool results need the tool_call_id of a call this API never made: they travel as user turns.
        role = "user" if m.role == "tool" else m.role
        item = {"role": role, "content": m.content}
        if m.name and role in ("user", "assistant", "system"):
            item["name"] = m.name
        out.append(item)
    return out


def chat_body(
    spec: ModelInfo,
    messages: list[Message],
    params: SamplingParams,
    *,
    stream: bool,
    max_tokens_field: str = "max_tokens",
    stream_usage: bool = True,
) -> dict[str, Any]:
    """The Chat Completions request for ``messages``."""
    body: dict[str, Any] = {"model": spec.model, "messages": openai_messages(messages)}
    if params.max_tokens is not None:
        body[max_tokens_field] = params.max_tokens
    if params.temperature is not None and "temperature" not in spec.drop_params:
        body["temperature"] = params.temperature
    if params.top_p is not None and "top_p" not in spec.drop_params:
        body["top_p"] = params.top_p
    if params.stop and "stop" not in spec.drop_params:
        body["stop"] = list(params.stop)
    if params.seed is not None and "seed" not in spec.drop_params:
        body["seed"] = params.seed
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(data: Mapping[str, Any] | None) -> Usage | None:
    if not isinstance(data, Mapping):
        return None
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
    )


def parse_chat(provider: str, spec: ModelInfo, messages: list[Message], data: Any) -> ChatResult:
    """A whole ``chat.completion`` answer."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        finish = FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop")
        usage = parse_usage(data.get("usage"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a chat.completion object") from None
    if not isinstance(text, str):
        raise ProviderBadResponse(provider, "the answer's message content is not text")
    return ChatResult(
        text=text,
        finish_reason=finish,
        usage=usage or estimate_usage(messages, text),
        model=spec.id,
        provider=provider,
    )


def stream_error(provider: str, data: Mapping[str, Any]) -> ProviderError:
    error = data.get("error")
    message = error.get("message") if isinstance(error, Mapping) else str(error)
    return ProviderUnavailable(provider, f"the stream failed: {message or 'no message'}")


class OpenAICompatibleProvider(HttpProvider):
    """``max_tokens_field``: OpenAI's own API wants ``max_completion_tokens`` (its reasoning models refuse
    ``max_tokens``), the compatible ones ``max_tokens``. ``stream_usage``: ask for usage in streams."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        options: HttpOptions,
        *,
        max_tokens_field: str = "max_tokens",
        stream_usage: bool = True,
        http2: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, base_url, api_key, options, http2=http2, headers=headers, transport=transport)
        self.max_tokens_field = max_tokens_field
        self.stream_usage = stream_usage

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def _body(self, spec: ModelInfo, messages: list[Message], params: SamplingParams, stream: bool) -> dict:
        return chat_body(
            spec,
            messages,
            params,
            stream=stream,
            max_tokens_field=self.max_tokens_field,
            stream_usage=self.stream_usage,
        )

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        data = await self.post_json("/chat/completions", self._body(spec, messages, params, stream=False))
        return parse_chat(self.name, spec, messages, data)

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        finish, usage, text, done = "", None, [], False
        async with self.post_sse("/chat/completions", self._body(spec, messages, params, stream=True)) as events:
            async for event in events:
                if event.data.strip() == "[DONE]":
                    done = True
                    break
                chunk = parse_json(self.name, event.data)
                if not isinstance(chunk, Mapping):
                    raise ProviderBadResponse(self.name, "a stream chunk is not an object")
                if "error" in chunk:
                    raise stream_error(self.name, chunk)
                usage = parse_usage(chunk.get("usage")) or usage
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") or ""
                    if piece:
                        text.append(piece)
                        yield ChatDelta(text=piece)
                    if choice.get("finish_reason"):
                        finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
                    usage = parse_usage(choice.get("usage")) or usage
        if not done and not finish:
            raise ProviderUnavailable(self.name, "the stream ended before the answer did")
        yield ChatDelta(finish_reason=finish or "stop", usage=usage or estimate_usage(messages, "".join(text)))

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        data = await self.post_json("/embeddings", {"model": spec.model, "input": inputs, "encoding_format": "float"})
        try:
            rows = sorted(data["data"], key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProviderBadResponse(self.name, "the answer is not an embeddings list") from None
        if len(vectors) != len(inputs):
            raise ProviderBadResponse(self.name, f"{len(vectors)} embeddings for {len(inputs)} inputs")
        return Embeddings(
            model=spec.id,
            vectors=vectors,
            prompt_tokens=prompt_tokens or sum(estimate_tokens(t) for t in inputs),
            dimensions=len(vectors[0]) if vectors else 0,
        )
