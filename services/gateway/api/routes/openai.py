"""The OpenAI-compatible API: chat completions (unary and SSE), models, embeddings, and /invoke.

A chat with ``goblin.rag`` (the ``rag`` scope too) answers from the caller's documents: the response
has ``citations`` (every passage the prompt had, in marker order, each flagged ``cited`` when the
answer used its ``[n]``) and ``rag_hit``; streamed, both arrive on the chunk that carries
``finish_reason``."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from goblin.v1 import auth_pb2, common_pb2
from services.common.chat import RAG_SCOPE, Message, new_completion_id
from services.common.chat_content import message_texts, unchanged, with_message_texts
from services.common.context import current_correlation_id, hash_user_id
from services.common.secrets import SecretGuard
from services.common.topology import KNOWN_PROVIDERS
from services.gateway.api.chat_wire import (
    chat_messages,
    chat_options,
    chat_request,
    choice_json,
    delta_json,
    finish_reason,
    logprobs_json,
    sampling,
)
from services.gateway.api.fast_json import FastJSONResponse, dumps
from services.gateway.api.schemas.openai import ChatCompletionRequest, EmbeddingRequest, InvokeRequest, OpenAIBody
from services.gateway.api.streams import SseResponse, all_or_none, first_chunks, merged
from services.gateway.clients import ChatStream
from services.gateway.deps import (
    ChatDep,
    ChatReadDep,
    StateDep,
    has_scope,
    principal_context,
)
from services.gateway.errors import ApiError, error_body
from services.gateway.metrics import CHAT_COMPLETIONS, CHAT_ERRORS, CHAT_TOKENS
from services.gateway.state import GatewayState

router = APIRouter(tags=["openai"])


def provider_label(model: str) -> str:
    """The provider label of a failed request's model id: a known provider, ``alias``, or ``other``,
    so a client-chosen id cannot blow up the metric's label set."""
    prefix = model.split("/", 1)[0] if "/" in model else "local" if model == "local" else "alias"
    return prefix if prefix in KNOWN_PROVIDERS or prefix == "alias" else "other"


async def scan(guard: SecretGuard, texts: list[str], principal: auth_pb2.Principal) -> list[str]:
    """request_creation: secrets are redacted (or the request refused) before anything leaves the gateway;
    a large body is scanned in a worker thread so it never holds the event loop."""
    return await guard.check_async(
        texts,
        tenant_id=principal.tenant_id,
        user_hash=hash_user_id(principal.user_id),
        correlation_id=current_correlation_id(),
    )


def count_answer(provider: str, model: str, usage: common_pb2.Usage) -> None:
    if not provider:
        return  # nobody answered: a collection without a hit gets its fixed answer from the router
    CHAT_COMPLETIONS.labels(provider, model).inc()
    CHAT_TOKENS.labels(provider, model, "prompt").inc(usage.prompt_tokens)
    CHAT_TOKENS.labels(provider, model, "completion").inc(usage.completion_tokens)


# A chat may legitimately take minutes on a CPU; the inference queue bounds how many wait.
CHAT_TIMEOUT_S = 600
EMBED_TIMEOUT_S = 120
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def scan_messages(guard: SecretGuard, messages: list[Message], principal: auth_pb2.Principal) -> list[Message]:
    """``messages`` with every text a person or tool wrote scanned (content, text parts, tool arguments)."""
    texts = message_texts(messages)
    scanned = await scan(guard, texts, principal)
    return messages if unchanged(texts, scanned) else with_message_texts(messages, scanned)


def ignored_header(body: OpenAIBody) -> dict[str, str]:
    """``X-Goblin-Ignored-Params``: the unknown top-level fields the request sent (ignored, not an error)."""
    ignored = body.ignored
    return {"X-Goblin-Ignored-Params": ",".join(name[:64] for name in ignored[:32])} if ignored else {}


async def ask_router(state: GatewayState, request: common_pb2.ChatRequest) -> common_pb2.ChatResponse:
    """One of a request's ``n`` router calls (each carries an assertion of its own, signed as it is made)."""
    return await state.clients.router.chat(request, deadline_s=CHAT_TIMEOUT_S)


def start_streams(state: GatewayState, request: common_pb2.ChatRequest, n: int) -> list[ChatStream]:
    """``n`` router streams of ``request``, each with an assertion of its own (made when it starts)."""
    return [state.clients.router.chat_stream(request, deadline_s=CHAT_TIMEOUT_S) for _ in range(n)]


def bypass_cache(http: Request) -> bool:
    """Cache-Control: no-cache (or no-store) asks for a fresh answer: the router's response cache is skipped."""
    directives = {d.strip().lower() for d in http.headers.get("cache-control", "").split(",")}
    return bool(directives & {"no-cache", "no-store"})


def require_rag_scope(principal: auth_pb2.Principal) -> None:
    """Reading a collection needs the rag service's read scope, not only ``chat``."""
    if not has_scope(principal, RAG_SCOPE):
        raise ApiError(
            403,
            "insufficient_scope",
            f"answering from documents needs a credential with the '{RAG_SCOPE}' scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="chat {RAG_SCOPE}"'},
        )


def citations_json(citations: Sequence[common_pb2.Citation]) -> list[dict[str, Any]]:
    """The passages an answer was given with, in the order of their ``[n]`` markers."""
    return [
        {
            "marker": c.marker,
            "cited": c.cited,
            "collection": c.collection,
            "document_id": c.document_id,
            "chunk_id": c.chunk_id,
            "title": c.title,
            "heading": c.heading,
            "source": c.source,
            "score": round(c.score, 6),
            "snippet": c.snippet,
        }
        for c in citations
    ]


def usage_json(*usages: common_pb2.Usage) -> dict[str, int]:
    """The usage of one answer, or the sum of several (``n`` choices are ``n`` model calls)."""
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible; stream: true for SSE)")
@router.post("/chat/completions", summary="Chat completion (alias of /v1/chat/completions)")
async def chat_completions(body: ChatCompletionRequest, principal: ChatDep, state: StateDep, http: Request) -> Any:
    return await chat_answer(body, principal, state, http)


async def chat_answer(
    body: ChatCompletionRequest, principal: auth_pb2.Principal, state: GatewayState, http: Request
) -> Response:
    """The answer to a validated chat body from an authorized caller: the route's whole work, shared by
    the FastAPI route and the pure-ASGI one (api/asgi_routes.py); refusals are raised (ApiError, ...)."""
    rag = body.goblin is not None and body.goblin.rag is not None
    if rag:
        require_rag_scope(principal)
    # Every check (messages, tools, schemas, images, parameters) before anything leaves the gateway.
    messages = chat_messages(body.messages)
    options = chat_options(body)
    params = sampling(body, max_tokens=body.token_limit, logprobs=bool(body.logprobs), top_logprobs=body.top_logprobs)
    messages = await scan_messages(state.secret_guard, messages, principal)
    request = chat_request(messages, params, options, body.model, body)
    request.context.CopyFrom(principal_context(principal, http))
    request.routing.bypass_cache = bypass_cache(http)
    legacy, logprobs = body.legacy_functions, bool(body.logprobs)
    headers = ignored_header(body)
    label = provider_label(body.model)
    if body.stream:
        streams = start_streams(state, request, body.n)

        def render(index: int, chunk: common_pb2.ChatChunk) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "object": "chat.completion.chunk",
                "model": chunk.model,
                "choices": [
                    {
                        "index": index,
                        "delta": delta_json(chunk, legacy),
                        "finish_reason": finish_reason(chunk.finish_reason, legacy) if chunk.finish_reason else None,
                        "logprobs": logprobs_json(chunk.logprobs) if logprobs and chunk.logprobs else None,
                    }
                ],
            }
            if rag and chunk.finish_reason:
                payload["citations"] = citations_json(chunk.citations)
                payload["rag_hit"] = chunk.rag_hit
            return payload

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_answer(streams, render, "chat.completion.chunk", include_usage, label, headers)
    try:
        replies = await all_or_none([ask_router(state, request) for _ in range(body.n)])
    except ApiError as error:
        CHAT_ERRORS.labels(label, error.error).inc()
        raise
    for reply in replies:
        count_answer(reply.provider, reply.model, reply.usage)
    first = replies[0]
    answer: dict[str, Any] = {
        "id": first.id or new_completion_id(),
        "object": "chat.completion",
        "created": first.created or int(time.time()),
        "model": first.model,
        "choices": [choice_json(r, i, legacy=legacy, logprobs=logprobs) for i, r in enumerate(replies)],
        "usage": usage_json(*[r.usage for r in replies]),
        "system_fingerprint": None,
    }
    if rag:
        answer["citations"] = citations_json(first.citations)
        answer["rag_hit"] = first.rag_hit
    # A response, not a dict: a returned dict would go through FastAPI's jsonable_encoder first.
    return FastJSONResponse(answer, headers=headers)


async def sse_answer(
    streams: list[ChatStream],
    render: Callable[[int, common_pb2.ChatChunk], dict[str, Any]],
    kind: str,
    include_usage: bool,
    requested_provider: str,
    headers: dict[str, str],
) -> SseResponse:
    """The SSE answer of one or more streams (``n`` choices): ``render`` makes each chunk's payload
    (``id`` and ``created`` are added here, the same on every chunk); the usage of all of them in one
    last chunk when ``include_usage``; then ``[DONE]``."""
    # Wait for the first chunks before answering, so refusals (unknown model, full queue, budget) get
    # their real HTTP status instead of a 200 followed by an error event.
    try:
        firsts = await first_chunks(streams)
    except ApiError as error:
        CHAT_ERRORS.labels(requested_provider, error.error).inc()
        raise
    if any(first is None for first in firsts):
        for stream in streams:
            stream.cancel()
        raise ApiError(502, "upstream_error", "the model returned an empty stream")
    completion_id = new_completion_id("chatcmpl" if kind.startswith("chat") else "cmpl")
    created = int(time.time())

    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + dumps(payload) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        model, provider = "", ""
        usages: dict[int, common_pb2.Usage] = {}
        try:
            async for index, chunk in merged(streams, firsts):
                model = chunk.model or model
                provider = chunk.provider or provider
                if chunk.HasField("usage"):
                    usages[index] = chunk.usage
                yield event({"id": completion_id, "created": created, **render(index, chunk)})
        except ApiError as error:
            CHAT_ERRORS.labels(provider or requested_provider, error.error).inc()
            # Mid-stream the status line is already sent: OpenAI's in-stream error object, which SDKs raise.
            body = error_body(error.error, error.message, extra=error.extra)
            yield event({"error": {**body, "type": error.error, "code": error.error}})
            return
        finally:
            for stream in streams:
                stream.cancel()  # no-op when finished; frees the model when the client went away
        for usage in usages.values():
            count_answer(provider, model, usage)
        if include_usage and usages:
            usage = usage_json(*usages.values())
            yield event(
                {"id": completion_id, "object": kind, "created": created, "model": model, "choices": [], "usage": usage}
            )
        yield b"data: [DONE]\n\n"

    return SseResponse(events(), {**SSE_HEADERS, **headers})


@router.get("/v1/models", summary="Every model the router can reach")
async def list_models(principal: ChatReadDep, state: StateDep, http: Request) -> dict[str, Any]:
    models = await state.clients.router.list_models(principal_context(principal, http))
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.owned_by or m.provider,
                "aliases": list(m.aliases),
                "capabilities": list(m.capabilities),
                "context_length": m.context_length,
            }
            for m in models
        ],
    }


@router.post("/v1/embeddings", summary="Embeddings (OpenAI-compatible) from the local embedding model")
async def embeddings(body: EmbeddingRequest, principal: ChatDep, state: StateDep, http: Request) -> dict[str, Any]:
    if body.dimensions is not None:
        raise ApiError(400, "invalid_request", "dimensions is not supported by the local embedding model")
    reply = await state.clients.router.embed(
        body.model,
        await scan(state.secret_guard, list(body.input), principal),
        principal_context(principal, http),
        deadline_s=EMBED_TIMEOUT_S,
    )

    def encode(values: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        return values

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(list(vector))}
            for i, vector in enumerate(reply.vectors)
        ],
        "model": reply.model,
        "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens},
    }


@router.post("/invoke", summary="One completion for one prompt (kept for old clients)")
async def invoke(body: InvokeRequest, principal: ChatDep, state: StateDep, http: Request) -> FastJSONResponse:
    model = f"{body.provider}/{body.model}" if body.model else body.provider
    params = common_pb2.SamplingParams()
    if body.max_tokens is not None:
        params.max_tokens = body.max_tokens
    if body.temperature is not None:
        params.temperature = body.temperature
    request = common_pb2.ChatRequest(
        model=model,
        messages=[
            common_pb2.ChatMessage(role="user", content=(await scan(state.secret_guard, [body.prompt], principal))[0])
        ],
        params=params,
        context=principal_context(principal, http),
    )
    try:
        reply = await state.clients.router.chat(request, deadline_s=CHAT_TIMEOUT_S)
    except ApiError as error:
        CHAT_ERRORS.labels(provider_label(model), error.error).inc()
        raise
    count_answer(reply.provider, reply.model, reply.usage)
    return FastJSONResponse(
        {
            "response": reply.message.content,
            "provider": reply.provider,
            "model": reply.model,
            "finish_reason": reply.finish_reason,
            "usage": usage_json(reply.usage),
        }
    )
