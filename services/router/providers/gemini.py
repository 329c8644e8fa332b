"""Google's Gemini API (generativelanguage.googleapis.com): the one place Goblin's chat types and
Gemini's wire format meet.

Wire format: ``POST {base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``; turns are
``contents`` of ``parts`` with roles ``user`` and ``model``, the system prompt is
``systemInstruction``, sampling is ``generationConfig``. Streaming is
``:streamGenerateContent?alt=sse``: each event a whole ``GenerateContentResponse`` holding the new
text (or whole ``functionCall`` parts), the last one with ``finishReason``; ``usageMetadata`` gives the
token counts. There is no end-of-stream marker.

Translation (OpenAI shape -> Gemini, and back):

- ``tools`` -> ``tools[].functionDeclarations`` with the parameters in Gemini's schema subset
  (:mod:`~services.router.providers.gemini_schema` says what is dropped); ``tool_choice`` ->
  ``toolConfig.functionCallingConfig`` (auto AUTO, required ANY, a named function ANY with
  ``allowedFunctionNames``, none NONE). Gemini cannot be told not to call functions in parallel:
  with ``parallel_tool_calls: false`` only an answer's first call is kept.
- An assistant turn's ``tool_calls`` -> ``functionCall`` parts; ``tool`` messages -> ``functionResponse``
  parts of one user turn, in the order of the calls they answer. Gemini has no call ids: its calls
  get ``call_...`` ids here, and a ``tool`` message's ``tool_call_id`` is mapped back to the function
  name (and call order) through the conversation's assistant turns, so ids issued by any provider work.
- ``response_format`` -> ``generationConfig.responseMimeType`` ``application/json`` (+ ``responseSchema``);
  with functions to call as well, a JSON schema travels as a function instead
  (:mod:`~services.router.providers.format_tool`), whose call is the answer.
- Image parts -> ``inlineData``: a ``data:`` URL's bytes, or an https URL's, fetched by
  :mod:`~services.router.providers.image_fetch` (public https only, deadline, size cap).
- Answers: ``functionCall`` parts -> ``tool_calls`` (streamed as a call's first piece, then its whole
  arguments), and ``finish_reason: tool_calls`` when the answer calls functions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import (
    NO_OPTIONS,
    ChatOptions,
    ImageData,
    ToolCall,
    ToolCallDelta,
    decode_data_url,
)
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings, estimate_tokens, estimate_usage
from services.router.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderUnavailable,
)
from services.router.providers.format_tool import ResponseTool, response_tool
from services.router.providers.gemini_schema import gemini_schema
from services.router.providers.http import HttpProvider, error_from_response, parse_json
from services.router.providers.image_fetch import fetch_image
from services.router.providers.tool_ids import WIRE_ID, arguments_object, call_names, new_call_id

API_VERSION = "v1beta"
# Gemini 3 refuses a conversation whose function calls lack the thought signature it issued with
# them. Calls from another provider (or from Gemini through a client that only kept OpenAI's fields)
# have none: Google documents this value for such calls, so they pass validation.
THOUGHT_SIGNATURE_BYPASS = "skip_thought_signature_validator"
FETCH_CONCURRENCY = 4

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
CALLING_MODES = {"auto": "AUTO", "required": "ANY", "function": "ANY", "none": "NONE"}


def model_path(model: str, method: str) -> str:
    return f"/{API_VERSION}/models/{quote(model, safe='-._~')}:{method}"


# -- request ------------------------------------------------------------------------------------


def https_images(messages: Sequence[Message]) -> list[str]:
    """The https image URLs of ``messages`` (each once), which Gemini needs as bytes."""
    urls = [p.image_url for m in messages for p in m.parts if p.is_image and p.image_url.startswith("https://")]
    return list(dict.fromkeys(urls))


async def fetch_images(urls: Sequence[str], fetch=fetch_image) -> dict[str, ImageData]:
    """The images at ``urls``, a few at a time; the first failure is the request's error."""
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(url: str) -> ImageData:
        async with gate:
            return await fetch(url, "image_url")

    images = await asyncio.gather(*(one(url) for url in urls))
    return dict(zip(urls, images, strict=True))


def user_parts(message: Message, where: str, images: Mapping[str, ImageData]) -> list[dict[str, Any]]:
    if not message.parts:
        return [{"text": message.content}] if message.content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts):
        if not part.is_image:
            if part.text:
                parts.append({"text": part.text})
            continue
        url = part.image_url
        image = decode_data_url(url, f"{where}.content[{j}].image_url") if url.startswith("data:") else images.get(url)
        if image is None:
            raise InvalidArgument(f"{where}.content[{j}].image_url: the image was not fetched")
        parts.append({"inlineData": {"mimeType": image.media_type, "data": image.base64}})
    return parts


def model_parts(message: Message, where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    for j, call in enumerate(message.tool_calls):
        args = arguments_object(call.arguments, f"{where}.tool_calls[{j}].function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
        if j == 0:
            part["thoughtSignature"] = THOUGHT_SIGNATURE_BYPASS
        parts.append(part)
    return parts


def function_response(message: Message, names: Mapping[str, tuple[str, int]], where: str) -> dict[str, Any]:
    """A ``tool`` message as a ``functionResponse``: a JSON object answer as it is, anything else as
    ``{"output": ...}`` (Gemini's documented key)."""
    if message.tool_call_id not in names:
        raise InvalidArgument(f"{where}.tool_call_id: answers no tool call of an earlier assistant message")
    try:
        value: Any = json.loads(message.content)
    except ValueError:
        value = message.content
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": names[message.tool_call_id][0], "response": response}}


def gemini_contents(messages: Sequence[Message], images: Mapping[str, ImageData]) -> list[dict[str, Any]]:
    """The conversation without its system prompt, as alternating user/model contents."""
    names = call_names(messages)
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role == "system":
            continue
        if message.role == "tool":
            role, parts = "user", [function_response(message, names, where)]
            order = names[message.tool_call_id][1]
        elif message.role == "assistant":
            role, parts, order = "model", model_parts(message, where), 0
        else:
            role, parts, order = "user", user_parts(message, where, images), 0
        if not parts:
            continue
        if not contents or contents[-1]["role"] != role:
            contents.append({"role": role, "parts": [], "order": []})
        contents[-1]["parts"].extend(parts)
        contents[-1]["order"].extend([order] * len(parts))
    for content in contents:
        # Answers to parallel calls go first, in the order of the calls (Gemini matches them so).
        keyed = sorted(
            zip(content.pop("order"), content["parts"], strict=True),
            key=lambda item: (0, item[0]) if "functionResponse" in item[1] else (1, 0),
        )
        content["parts"] = [part for _, part in keyed]
    return contents


def format_tool(options: ChatOptions) -> ResponseTool | None:
    """The tool that carries a JSON-schema answer when the request also has functions Gemini may call
    (before Gemini 3 it refuses JSON mode with function calling; see
    :mod:`~services.router.providers.format_tool`); None: JSON mode answers."""
    tool = response_tool(options)
    choice = options.tool_choice
    if tool is None or options.response_format.type != "json_schema" or not options.tools:
        return None
    if (choice is not None and choice.mode == "none") or not tool.schema.get("properties"):
        return None
    return tool


def tool_fields(options: ChatOptions, fmt_tool: ResponseTool | None = None) -> dict[str, Any]:
    """``tools`` and ``toolConfig`` for the request's tools, tool choice and format tool."""
    if not options.tools:
        return {}
    declarations = []
    tools = [
        (t.name, t.description, t.parameters, f"tools[{i}].function.parameters") for i, t in enumerate(options.tools)
    ]
    if fmt_tool is not None:
        tools.append((fmt_tool.name, fmt_tool.description, fmt_tool.schema, "response_format.json_schema.schema"))
    for name, description, schema, where in tools:
        declaration: dict[str, Any] = {"name": name}
        if description:
            declaration["description"] = description
        parameters = gemini_schema(schema, where)
        # Gemini refuses an OBJECT without properties: a function without parameters declares none.
        if parameters.get("properties") or parameters.get("type") not in (None, "OBJECT"):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    fields: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
    choice = options.tool_choice
    mode = choice.mode if choice is not None else ("required" if fmt_tool is not None else "")
    if mode:
        config: dict[str, Any] = {"mode": CALLING_MODES[mode]}
        if mode == "function":
            config["allowedFunctionNames"] = [choice.function]
        elif mode == "auto" and fmt_tool is not None:
            config["mode"] = "ANY"  # a call, or the answer through the format's tool: never free text
        fields["toolConfig"] = {"functionCallingConfig": config}
    return fields


def generate_body(
    spec: ModelInfo,
    messages: list[Message],
    params: SamplingParams,
    options: ChatOptions = NO_OPTIONS,
    images: Mapping[str, ImageData] | None = None,
) -> dict[str, Any]:
    """The ``generateContent`` request for ``messages`` and ``options``; ``images``: the https images
    of the conversation, fetched."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    contents = gemini_contents(messages, images or {})
    if not contents:
        raise InvalidArgument("Gemini models need at least one non-system message with content")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    fmt_tool = format_tool(options)
    body.update(tool_fields(options, fmt_tool))
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
    fmt = options.response_format
    if fmt is not None and fmt.type in ("json_object", "json_schema") and fmt_tool is None:
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            config["responseSchema"] = gemini_schema(fmt.schema, "response_format.json_schema.schema", ordered=True)
    if config:
        body["generationConfig"] = config
    return body


# -- answer -------------------------------------------------------------------------------------


def parse_usage(data: Any) -> Usage | None:
    """Thinking tokens are billed as output."""
    if not isinstance(data, Mapping):
        return None
    return Usage(
        prompt_tokens=int(data.get("promptTokenCount") or 0),
        completion_tokens=int(data.get("candidatesTokenCount") or 0) + int(data.get("thoughtsTokenCount") or 0),
    )


def parse_candidate(data: Any, fmt_tool: ResponseTool | None = None) -> tuple[str, list[ToolCall], str]:
    """(text, function calls, finish reason or "") of the first candidate; thought parts are not answer
    text. Each call gets the id Gemini gave it, if any, else a new one; a call of the format's tool is
    the answer's text."""
    candidates = data.get("candidates")
    if not candidates:
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        return "", [], "content_filter" if blocked else ""
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or ()
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    calls = []
    for part in parts:
        call = part.get("functionCall")
        if call is None:
            continue
        if fmt_tool is not None and call.get("name") == fmt_tool.name:
            text += fmt_tool.answer(call.get("args"))
            continue
        given = call.get("id")
        call_id = given if isinstance(given, str) and WIRE_ID.match(given) else new_call_id()
        calls.append(ToolCall(id=call_id, name=call["name"], arguments=json.dumps(call.get("args") or {})))
    reason = candidate.get("finishReason") or ""
    return text, calls, FINISH_REASONS.get(reason, "stop") if reason else ""


def parse_response(
    provider: str, spec: ModelInfo, messages: list[Message], data: Any, options: ChatOptions = NO_OPTIONS
) -> ChatResult:
    try:
        text, calls, finish = parse_candidate(data, format_tool(options))
        usage = parse_usage(data.get("usageMetadata"))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse(provider, "the answer is not a GenerateContentResponse") from None
    if options.parallel_tool_calls is False:
        calls = calls[:1]
    finish = finish or "stop"
    if calls and finish == "stop":
        finish = "tool_calls"  # Gemini says STOP after calling functions
    return ChatResult(
        text=text,
        finish_reason=finish,
        usage=usage or estimate_usage(messages, text),
        model=spec.id,
        provider=provider,
        tool_calls=tuple(calls),
    )


class GeminiProvider(HttpProvider):
    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key or ""}

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return await self.post_json(path, body)
        except ProviderError as exc:
            raise _key_error(self.name, exc) from None

    async def _body(
        self, spec: ModelInfo, messages: list[Message], params: SamplingParams, options: ChatOptions
    ) -> dict[str, Any]:
        urls = https_images(messages)
        images = await fetch_images(urls) if urls else {}
        return generate_body(spec, messages, params, options, images)

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        body = await self._body(spec, messages, params, options)
        data = await self._post(model_path(spec.model, "generateContent"), body)
        return parse_response(self.name, spec, messages, data, options)

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        finish, usage, streamed, calls = "", None, [], 0
        fmt_tool = format_tool(options)
        body = await self._body(spec, messages, params, options)
        path = model_path(spec.model, "streamGenerateContent")
        try:
            async with self.post_sse(path, body, params={"alt": "sse"}) as events:
                async for event in events:
                    data = parse_json(self.name, event.data)
                    if not isinstance(data, Mapping):
                        raise ProviderBadResponse(self.name, "a stream event is not an object")
                    if "error" in data:
                        raise error_from_response(
                            self.name, int(data["error"].get("code") or 500), {}, event.data.encode()
                        )
                    try:
                        piece, new_calls, reason = parse_candidate(data, fmt_tool)
                    except (KeyError, TypeError, AttributeError):
                        raise ProviderBadResponse(self.name, "a stream event is not a response") from None
                    usage = parse_usage(data.get("usageMetadata")) or usage
                    if piece:
                        streamed.append(piece)
                        yield ChatDelta(text=piece)
                    for call in new_calls:
                        if options.parallel_tool_calls is False and calls:
                            break
                        # Gemini sends a call whole: its first piece (index, id, name), then its arguments.
                        yield ChatDelta(tool_calls=(ToolCallDelta(index=calls, id=call.id, name=call.name),))
                        yield ChatDelta(tool_calls=(ToolCallDelta(index=calls, arguments=call.arguments),))
                        streamed.append(call.arguments)
                        calls += 1
                    finish = reason or finish
        except ProviderError as exc:
            raise _key_error(self.name, exc) from None
        if not finish:
            raise ProviderUnavailable(self.name, "the stream ended without a finish reason")
        if calls and finish == "stop":
            finish = "tool_calls"
        yield ChatDelta(finish_reason=finish, usage=usage or estimate_usage(messages, "".join(streamed)))

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
