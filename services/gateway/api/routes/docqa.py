"""DocQA: ``POST /api/query`` answers a question from one of the caller's collections, or from all of
them when it names none (the rag service takes them from the signed principal: the caller's tenant only),
with citations.

It is a chat through the router with ``goblin.rag`` set (the router asks the rag service and puts the
passages into the prompt), so it works with any model the router can reach. The credential needs
``chat`` (model capacity, charged to the daily request quota) and ``rag`` (reading the documents).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from goblin.v1 import auth_pb2, common_pb2
from services.common.chat import RAG_SCOPE
from services.gateway.api.routes.openai import (
    CHAT_TIMEOUT_S,
    citations_json,
    count_answer,
    provider_label,
    scan,
    usage_json,
)
from services.gateway.api.schemas.docqa import DocQARequest
from services.gateway.deps import StateDep, principal_context, require_scopes
from services.gateway.errors import ApiError
from services.gateway.metrics import CHAT_ERRORS

router = APIRouter(tags=["docqa"])

DocQADep = Annotated[auth_pb2.Principal, Depends(require_scopes("chat", RAG_SCOPE, metered=True))]


@router.post("/api/query", summary="DocQA: an answer from your collections (one, or all), with citations")
async def query(body: DocQARequest, principal: DocQADep, state: StateDep, http: Request) -> JSONResponse:
    texts = [body.query, *([body.context] if body.context else [])]
    cleaned = await scan(state.secret_guard, texts, principal)
    messages = []
    if body.context:
        messages.append(common_pb2.ChatMessage(role="system", content=cleaned[1]))
    messages.append(common_pb2.ChatMessage(role="user", content=cleaned[0]))
    params = common_pb2.SamplingParams()
    if body.max_tokens is not None:
        params.max_tokens = body.max_tokens
    if body.temperature is not None:
        params.temperature = body.temperature
    request = common_pb2.ChatRequest(
        model=body.model,
        messages=messages,
        params=params,
        # "" is every collection of the caller's tenant (services.router.rag.check_options).
        rag=common_pb2.RagOptions(collection=body.collection or "", top_k=body.top_k),
        context=principal_context(principal, http),
    )
    try:
        reply = await state.clients.router.chat(request, deadline_s=CHAT_TIMEOUT_S)
    except ApiError as error:
        CHAT_ERRORS.labels(provider_label(body.model), error.error).inc()
        raise
    count_answer(reply.provider, reply.model, reply.usage)
    return JSONResponse(
        {
            "answer": reply.message.content,
            "hit": reply.rag_hit,
            "citations": citations_json(reply.citations),
            "model": reply.model,
            "finish_reason": reply.finish_reason or "stop",
            "usage": usage_json(reply.usage),
        }
    )
