"""The OpenAI-compatible API: chat completions (unary and SSE), models, embeddings, and /invoke.

A chat with ``goblin.rag`` (the ``rag`` scope too) answers from the caller's documents: the response
has ``citations`` (every passage the prompt had, in marker order, each flagged ``cited`` when the
answer used its ``[n]``) and ``rag_hit``; streamed, both arrive on the chunk that carries
``finish_reason``."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from goblin.v1 import auth_pb2, common_pb2
from services.common.chat import RAG_SCOPE, new_completion_id
from services.common.context import current_correlation_id, hash_user_id
from services.common.secrets import SecretGuard
from services.common.topology import KNOWN_PROVIDERS
from services.gateway.api.schemas.openai import ChatCompletionRequest, EmbeddingRequest, InvokeRequest
from services.gateway.clients import ChatStream
from services.gateway.deps import ChatDep, ChatReadDep, StateDep, has_scope, principal_context
from services.gateway.errors import ApiError, error_body
from services.gateway.metrics import CHAT_COMPLETIONS, CHAT_ERRORS, CHAT_TOKENS

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


def chat_request_to_proto(
    body: ChatCompletionRequest, principal: auth_pb2.Principal, http: Request
) -> common_pb2.ChatRequest:
    messages = []
    for i, message in enumerate(body.messages):
        try:
            text = message.text()
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"messages[{i}].content: {exc}") from None
        role = "system" if message.role == "developer" else message.role
        messages.append(common_pb2.ChatMessage(role=role, content=text, name=message.name or ""))
    params = common_pb2.SamplingParams(stop=body.stop or [])
    if body.token_limit is not None:
        params.max_tokens = body.token_limit
    if body.temperature is not None:
        params.temperature = body.temperature
    if body.top_p is not None:
        params.top_p = body.top_p
    if body.seed is not None:
        params.seed = body.seed
    request = common_pb2.ChatRequest(
        model=body.model, messages=messages, params=params, context=principal_context(principal, http)
    )
    if body.goblin is not None:
        request.routing.policy = body.goblin.policy or ""
        request.routing.fallbacks.extend(body.goblin.fallbacks)
        if body.goblin.rag is not None:
            request.rag.collection = body.goblin.rag.collection
            request.rag.top_k = body.goblin.rag.top_k
    return request


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


def usage_json(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible; stream: true for SSE)")
@router.post("/chat/completions", summary="Chat completion (alias of /v1/chat/completions)")
async def chat_completions(body: ChatCompletionRequest, principal: ChatDep, state: StateDep, http: Request) -> Any:
    rag = body.goblin is not None and body.goblin.rag is not None
    if rag:
        require_rag_scope(principal)
    request = chat_request_to_proto(body, principal, http)
    # Cache-Control: no-cache (or no-store) asks for a fresh answer: the router's response cache is skipped.
    directives = {d.strip().lower() for d in http.headers.get("cache-control", "").split(",")}
    request.routing.bypass_cache = bool(directives & {"no-cache", "no-store"})
    cleaned = await scan(state.secret_guard, [m.content for m in request.messages], principal)
    for message, text in zip(request.messages, cleaned, strict=True):
        message.content = text
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(
            state.clients.router.chat_stream(request, deadline_s=CHAT_TIMEOUT_S),
            include_usage,
            provider_label(body.model),
            rag=rag,
        )
    try:
        reply = await state.clients.router.chat(request, deadline_s=CHAT_TIMEOUT_S)
    except ApiError as error:
        CHAT_ERRORS.labels(provider_label(body.model), error.error).inc()
        raise
    count_answer(reply.provider, reply.model, reply.usage)
    answer: dict[str, Any] = {
        "id": reply.id or new_completion_id(),
        "object": "chat.completion",
        "created": reply.created or int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.message.content, "refusal": None},
                "finish_reason": reply.finish_reason or "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_json(reply.usage),
        "system_fingerprint": None,
    }
    if rag:
        answer["citations"] = citations_json(reply.citations)
        answer["rag_hit"] = reply.rag_hit
    # A response, not a dict: a returned dict would go through FastAPI's jsonable_encoder first.
    return JSONResponse(answer)


async def _stream(
    stream: ChatStream, include_usage: bool, requested_provider: str, *, rag: bool = False
) -> StreamingResponse:
    # Wait for the first chunk before answering, so refusals (unknown model, full queue, budget) get
    # their real HTTP status instead of a 200 followed by an error event.
    try:
        first = await stream.read()
    except ApiError as error:
        CHAT_ERRORS.labels(requested_provider, error.error).inc()
        raise
    completion_id, created = new_completion_id(), int(time.time())

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    def chunk_event(chunk: common_pb2.ChatChunk) -> str:
        delta: dict[str, Any] = {}
        if chunk.role:
            delta["role"] = chunk.role
        if chunk.delta or chunk.role:
            delta["content"] = chunk.delta
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chunk.model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": chunk.finish_reason or None,
                    "logprobs": None,
                }
            ],
        }
        if rag and chunk.finish_reason:
            payload["citations"] = citations_json(chunk.citations)
            payload["rag_hit"] = chunk.rag_hit
        return event(payload)

    async def events() -> AsyncIterator[str]:
        chunk = first
        model, provider = "", ""
        usage = None
        try:
            while chunk is not None:
                model = chunk.model or model
                provider = chunk.provider or provider
                if chunk.HasField("usage"):
                    usage = chunk.usage
                yield chunk_event(chunk)
                chunk = await stream.read()
        except ApiError as error:
            CHAT_ERRORS.labels(provider or requested_provider, error.error).inc()
            # Mid-stream the status line is already sent: OpenAI's in-stream error object, which SDKs raise.
            body = error_body(error.error, error.message, extra=error.extra)
            yield event({"error": {**body, "type": error.error, "code": error.error}})
            return
        finally:
            stream.cancel()  # no-op when finished; frees the model when the client went away
        if usage is not None:
            count_answer(provider, model, usage)
        if include_usage and usage is not None:
            yield event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage_json(usage),
                }
            )
        yield "data: [DONE]\n\n"

    if first is None:
        raise ApiError(502, "upstream_error", "the model returned an empty stream")
    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


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
async def invoke(body: InvokeRequest, principal: ChatDep, state: StateDep, http: Request) -> JSONResponse:
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
    return JSONResponse(
        {
            "response": reply.message.content,
            "provider": reply.provider,
            "model": reply.model,
            "finish_reason": reply.finish_reason,
            "usage": usage_json(reply.usage),
        }
    )
