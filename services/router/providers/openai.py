"""OpenAI's Chat Completions and Embeddings APIs, and every provider that speaks them (DeepSeek, xAI
Grok, Moonshot, SiliconFlow, any OpenAI-compatible endpoint declared in the catalog).

Wire format: ``POST {base}/chat/completions`` with ``Authorization: Bearer``; streaming is SSE of
``chat.completion.chunk`` objects ending with ``data: [DONE]``, usage in a last chunk when
``stream_options.include_usage`` is set (Moonshot puts it in the finishing choice instead).

Goblin's chat types are OpenAI's, so the translation is a pass-through: content parts, tools,
``tool_choice``, ``response_format``, penalties, ``logit_bias`` and logprobs go as they are; answers'
``tool_calls``, streamed ``delta.tool_calls`` fragments and ``logprobs.content`` come back as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions, TokenLogprob, ToolCall, ToolCallDelta
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


def openai_content(m: Message) -> str | list[dict[str, Any]] | None:
    if not m.parts:
        # An assistant turn that only called tools has no content (null, as OpenAI writes it).
        return None if m.tool_calls and not m.content else m.content
    out: list[dict[str, Any]] = []
    for part in m.parts:
        if part.type == "text":
            out.append({"type": "text", "text": part.text})
        else:
            image: dict[str, str] = {"url": part.image_url}
            if part.detail:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": openai_content(m)}
        if m.name and m.role in ("user", "assistant", "system"):
            item["name"] = m.name
        if m.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def options_body(options: ChatOptions) -> dict[str, Any]:
    """Tools, tool choice and response format as Chat Completions takes them."""
    body: dict[str, Any] = {}
    if options.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": dict(t.parameters),
                    **({"strict": True} if t.strict else {}),
                },
            }
            for t in options.tools
        ]
    choice = options.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.function}} if choice.mode == "function" else choice.mode
        )
    if options.parallel_tool_calls is not None and options.tools:
        body["parallel_tool_calls"] = options.parallel_tool_calls
    fmt = options.response_format
    if fmt is not None and fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.name, "schema": dict(fmt.schema or {})}
        if fmt.strict:
            schema["strict"] = True
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None:
        body["response_format"] = {"type": fmt.type}
    if options.user:
        body["user"] = options.user
    return body


def chat_body(
    spec: ModelInfo,
    messages: list[Message],
    params: SamplingParams,
    *,
    stream: bool,
    max_tokens_field: str = "max_tokens",
    stream_usage: bool = True,
    options: ChatOptions = NO_OPTIONS,
) -> dict[str, Any]:
    """The Chat Completions request for ``messages``."""
    body: dict[str, Any] = {"model": spec.model, "messages": openai_messages(messages), **options_body(options)}
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
    if params.presence_penalty is not None:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty is not None:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.logprobs:
        body["logprobs"] = True
        if params.top_logprobs is not None:
            body["top_logprobs"] = params.top_logprobs
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


def parse_logprobs(data: Any) -> tuple[TokenLogprob, ...]:
    """``choice.logprobs.content`` (absent or null: none)."""
    if not isinstance(data, Mapping) or not data.get("content"):
        return ()
    return tuple(
        TokenLogprob(
            token=str(item["token"]),
            logprob=float(item["logprob"]),
            top=tuple((str(t["token"]), float(t["logprob"])) for t in item.get("top_logprobs") or ()),
        )
        for item in data["content"]
    )


def parse_tool_calls(calls: Any) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(id=str(c["id"]), name=str(c["function"]["name"]), arguments=str(c["function"].get("arguments") or ""))
        for c in calls or ()
    )


def parse_tool_call_deltas(calls: Any) -> tuple[ToolCallDelta, ...]:
    out = []
    for c in calls or ():
        function = c.get("function") or {}
        out.append(
            ToolCallDelta(
                index=int(c.get("index") or 0),
                id=str(c.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
            )
        )
    return tuple(out)


def parse_chat(provider: str, spec: ModelInfo, messages: list[Message], data: Any) -> ChatResult:
    """A whole ``chat.completion`` answer."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        finish = FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop")
        usage = parse_usage(data.get("usage"))
        calls = parse_tool_calls(choice["message"].get("tool_calls"))
        logprobs = parse_logprobs(choice.get("logprobs"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a chat.completion object") from None
    if not isinstance(text, str):
        raise ProviderBadResponse(provider, "the answer's message content is not text")
    return ChatResult(
        text=text,
        finish_reason=finish,
        usage=usage or estimate_usage(messages, text + "".join(c.arguments for c in calls)),
        model=spec.id,
        provider=provider,
        tool_calls=calls,
        logprobs=logprobs,
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

    def _body(
        self, spec: ModelInfo, messages: list[Message], params: SamplingParams, stream: bool, options: ChatOptions
    ) -> dict:
        return chat_body(
            spec,
            messages,
            params,
            stream=stream,
            max_tokens_field=self.max_tokens_field,
            stream_usage=self.stream_usage,
            options=options,
        )

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        data = await self.post_json("/chat/completions", self._body(spec, messages, params, False, options))
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
        body = self._body(spec, messages, params, True, options)
        async with self.post_sse("/chat/completions", body) as events:
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
                    try:
                        calls = parse_tool_call_deltas(delta.get("tool_calls"))
                        logprobs = parse_logprobs(choice.get("logprobs"))
                    except (KeyError, TypeError, AttributeError, ValueError):
                        raise ProviderBadResponse(self.name, "a stream chunk's delta is malformed") from None
                    if piece or calls or logprobs:
                        text.append(piece)
                        text.extend(c.arguments for c in calls)
                        yield ChatDelta(text=piece, tool_calls=calls, logprobs=logprobs)
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
