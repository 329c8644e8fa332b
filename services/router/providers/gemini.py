"""Google's Gemini API (generativelanguage.googleapis.com).

Wire format: ``POST {base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``; turns are
``contents`` of ``parts`` with roles ``user`` and ``model``, the system prompt is
``systemInstruction``, sampling is ``generationConfig``. Streaming is
``:streamGenerateContent?alt=sse``: each event a whole ``GenerateContentResponse`` holding the new
text, the last one with ``finishReason``; ``usageMetadata`` gives the token counts. There is no
end-of-stream marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings, estimate_tokens, estimate_usage
from services.router.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderUnavailable,
)
from services.router.providers.http import HttpProvider, error_from_response, parse_json

API_VERSION = "v1beta"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "LANGUAGE": "stop",
    "OTHER": "stop",
}


def model_path(model: str, method: str) -> str:
    return f"/{API_VERSION}/models/{quote(model, safe='-._~')}:{method}"


def generate_body(spec: ModelInfo, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
    """The ``generateContent`` request for ``messages``."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    contents = [
        {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
        for m in messages
        if m.role != "system" and m.content
    ]
    if not contents:
        raise InvalidArgument("Gemini models need at least one non-system message with content")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    if params.max_tokens is not None:
        config["maxOutputTokens"] = params.max_tokens
    if params.temperature is not None and "temperature" not in spec.drop_params:
        config["temperature"] = params.temperature
    if params.top_p is not None and "top_p" not in spec.drop_params:
        config["topP"] = params.top_p
    if params.stop:
        config["stopSequences"] = list(params.stop)
    if params.seed is not None and "seed" not in spec.drop_params:
        config["seed"] = params.seed
    if config:
        body["generationConfig"] = config
    return body


def parse_usage(data: Any) -> Usage | None:
    """Thinking tokens are billed as output."""
    if not isinstance(data, Mapping):
        return None
    return Usage(
        prompt_tokens=int(data.get("promptTokenCount") or 0),
        completion_tokens=int(data.get("candidatesTokenCount") or 0) + int(data.get("thoughtsTokenCount") or 0),
    )


def parse_candidate(data: Any) -> tuple[str, str]:
    """(text, finish reason or "") of the first candidate; thought parts are not answer text."""
    candidates = data.get("candidates")
    if not candidates:
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        return "", "content_filter" if blocked else ""
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or ()
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    reason = candidate.get("finishReason") or ""
    return text, FINISH_REASONS.get(reason, "stop") if reason else ""


def parse_response(provider: str, spec: ModelInfo, messages: list[Message], data: Any) -> ChatResult:
    try:
        text, finish = parse_candidate(data)
        usage = parse_usage(data.get("usageMetadata"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a GenerateContentResponse") from None
    return ChatResult(
        text=text,
        finish_reason=finish or "stop",
        usage=usage or estimate_usage(messages, text),
        model=spec.id,
        provider=provider,
    )


class GeminiProvider(HttpProvider):
    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key or ""}

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return await self.post_json(path, body)
        except ProviderError as exc:
            raise _key_error(self.name, exc) from None

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        data = await self._post(model_path(spec.model, "generateContent"), generate_body(spec, messages, params))
        return parse_response(self.name, spec, messages, data)

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        finish, usage, text = "", None, []
        path = model_path(spec.model, "streamGenerateContent")
        try:
            async with self.post_sse(path, generate_body(spec, messages, params), params={"alt": "sse"}) as events:
                async for event in events:
                    data = parse_json(self.name, event.data)
                    if not isinstance(data, Mapping):
                        raise ProviderBadResponse(self.name, "a stream event is not an object")
                    if "error" in data:
                        raise error_from_response(
                            self.name, int(data["error"].get("code") or 500), {}, event.data.encode()
                        )
                    try:
                        piece, reason = parse_candidate(data)
                    except (TypeError, AttributeError):
                        raise ProviderBadResponse(self.name, "a stream event is not a response") from None
                    usage = parse_usage(data.get("usageMetadata")) or usage
                    if piece:
                        text.append(piece)
                        yield ChatDelta(text=piece)
                    finish = reason or finish
        except ProviderError as exc:
            raise _key_error(self.name, exc) from None
        if not finish:
            raise ProviderUnavailable(self.name, "the stream ended without a finish reason")
        yield ChatDelta(finish_reason=finish, usage=usage or estimate_usage(messages, "".join(text)))

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        body = {
            "requests": [{"model": f"models/{spec.model}", "content": {"parts": [{"text": text}]}} for text in inputs]
        }
        data = await self._post(model_path(spec.model, "batchEmbedContents"), body)
        try:
            vectors = [[float(x) for x in e["values"]] for e in data["embeddings"]]
        except (KeyError, TypeError, ValueError):
            raise ProviderBadResponse(self.name, "the answer is not a batchEmbedContents response") from None
        if len(vectors) != len(inputs):
            raise ProviderBadResponse(self.name, f"{len(vectors)} embeddings for {len(inputs)} inputs")
        return Embeddings(
            model=spec.id,
            vectors=vectors,
            prompt_tokens=sum(estimate_tokens(t) for t in inputs),  # the API does not report usage
            dimensions=len(vectors[0]) if vectors else 0,
        )


def _key_error(provider: str, exc: ProviderError) -> ProviderError:
    """Gemini answers a bad key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401."""
    if exc.http_status == 400 and "API key" in exc.message:
        return ProviderAuthError(provider, "the provider refused the configured API key (HTTP 400)", http_status=400)
    return exc
