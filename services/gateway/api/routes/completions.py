"""``POST /v1/completions``: OpenAI's legacy text completion, which clients and benchmarks still call.

It takes the chat path (the same router call, policies, budgets, cache and books): the prompt is one
user message to the chat model, and the answer's text is the completion. ``echo`` prepends the prompt;
``logprobs: k`` asks for each token's log probability and its k most likely alternatives (the model
must have the ``logprobs`` capability); ``suffix`` and ``best_of > 1`` are refused.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from goblin.v1 import auth_pb2, common_pb2
from services.common.chat import Message, check_messages, new_completion_id
from services.common.chat_content import NO_OPTIONS, ChatOptions
from services.gateway.api.chat_wire import chat_request, sampling
from services.gateway.api.routes.openai import (
    ask_router,
    bypass_cache,
    count_answer,
    ignored_header,
    provider_label,
    require_rag_scope,
    scan_messages,
    sse_answer,
    start_streams,
    usage_json,
)
from services.gateway.api.schemas.openai import CompletionRequest
from services.gateway.api.streams import all_or_none
from services.gateway.deps import ChatDep, StateDep, principal_context
from services.gateway.errors import ApiError
from services.gateway.metrics import CHAT_ERRORS
from services.gateway.state import GatewayState

router = APIRouter(tags=["openai"])


def text_logprobs(logprobs: Any, offset: int) -> dict[str, Any]:
    """The legacy ``logprobs`` object: tokens, their log probabilities, alternatives, text offsets."""
    tokens, offsets, at = [], [], offset
    for lp in logprobs:
        tokens.append(lp.token)
        offsets.append(at)
        at += len(lp.token)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in logprobs],
        "text_offset": offsets,
    }


@router.post("/v1/completions", summary="Text completion (OpenAI's legacy API, answered by the chat model)")
@router.post("/completions", summary="Text completion (alias of /v1/completions)")
async def completions(body: CompletionRequest, principal: ChatDep, state: StateDep, http: Request) -> Any:
    return await completion_answer(body, principal, state, http)


async def completion_answer(
    body: CompletionRequest, principal: auth_pb2.Principal, state: GatewayState, http: Request
) -> Response:
    """The answer to a validated completion body from an authorized caller, shared by the FastAPI route
    and the pure-ASGI one (api/asgi_routes.py)."""
    if body.goblin is not None and body.goblin.rag is not None:
        require_rag_scope(principal)
    prompt: str = body.prompt  # one string (the schema's check)
    messages = [Message("user", prompt)]
    check_messages(messages)
    wants_logprobs = body.logprobs is not None
    params = sampling(
        body,
        max_tokens=body.max_tokens,
        logprobs=wants_logprobs,
        top_logprobs=body.logprobs if wants_logprobs else None,
    )
    options = ChatOptions(user=body.user) if body.user else NO_OPTIONS
    messages = await scan_messages(state.secret_guard, messages, principal)
    request = chat_request(messages, params, options, body.model, body)
    request.context.CopyFrom(principal_context(principal, http))
    request.routing.bypass_cache = bypass_cache(http)
    headers = ignored_header(body)
    label = provider_label(body.model)
    echo = messages[0].content if body.echo else ""
    if body.stream:
        streams = start_streams(state, request, body.n)
        echoed: set[int] = set()

        def render(index: int, chunk: common_pb2.ChatChunk) -> dict[str, Any]:
            text = chunk.delta
            if echo and index not in echoed:
                echoed.add(index)
                text = echo + text
            choice = {
                "index": index,
                "text": text,
                "logprobs": text_logprobs(chunk.logprobs, 0) if wants_logprobs and chunk.logprobs else None,
                "finish_reason": chunk.finish_reason or None,
            }
            return {"object": "text_completion", "model": chunk.model, "choices": [choice]}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_answer(streams, render, "text_completion", include_usage, label, headers)
    try:
        replies = await all_or_none([ask_router(state, request) for _ in range(body.n)])
    except ApiError as error:
        CHAT_ERRORS.labels(label, error.error).inc()
        raise
    for reply in replies:
        count_answer(reply.provider, reply.model, reply.usage)
    answer = {
        "id": new_completion_id("cmpl"),
        "object": "text_completion",
        "created": replies[0].created or int(time.time()),
        "model": replies[0].model,
        "choices": [
            {
                "index": i,
                "text": echo + r.message.content,
                "logprobs": text_logprobs(r.logprobs, len(echo)) if wants_logprobs else None,
                "finish_reason": r.finish_reason or "stop",
            }
            for i, r in enumerate(replies)
        ],
        "usage": usage_json(*[r.usage for r in replies]),
    }
    return JSONResponse(answer, headers=headers)
