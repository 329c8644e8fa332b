"""gRPC translation for the router: a request is translated once on entry and its answer once on exit,
with the shared chat translations of :mod:`services.common.chat`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from goblin.v1 import common_pb2, router_pb2, router_pb2_grpc
from services.common.chat import (
    ChatDelta,
    ChunkHeader,
    Usage,
    delta_to_proto,
    messages_from_proto,
    model_info_to_proto,
    new_completion_id,
    params_from_proto,
    result_to_proto,
    usage_to_proto,
)
from services.common.chat_content import options_from_proto
from services.common.context import current_correlation_id, hash_user_id
from services.common.errors import InvalidArgument, PermissionDenied, Unavailable
from services.common.principal import current_principal
from services.router.budget import day_start
from services.router.providers.base import CallContext
from services.router.rag import Citation, Prepared, RagStep, check_options, mark_cited
from services.router.rag_client import RagClient, incoming_assertion
from services.router.service import ChatCall, RouterService
from services.router.usage import UsageBooks


def context_from_proto(ctx: common_pb2.RequestContext) -> CallContext:
    """The caller as the router's domain sees it: tenant, key, scopes and budgets from the principal the
    server interceptor verified (services.common.principal), none from the request; the correlation id
    is the call's (from its metadata). The interceptor lets no router call in without a principal; an
    empty context (nobody) is what a servicer called in-process without one gets."""
    principal = current_principal()
    if principal is None:
        return CallContext(correlation_id=current_correlation_id())
    return CallContext(
        correlation_id=current_correlation_id(),
        tenant_id=principal.tenant_id,
        user_hash=hash_user_id(principal.user_id),
        api_key_id=principal.api_key_id,
        scopes=principal.scopes,
        tenant_daily_budget_usd=principal.tenant_daily_budget_usd,
        key_tokens_per_day=principal.key_tokens_per_day,
    )


def call_from_proto(request: common_pb2.ChatRequest) -> ChatCall:
    routing = request.routing
    return ChatCall(
        model=request.model,
        messages=messages_from_proto(list(request.messages)),
        params=params_from_proto(request.params),
        context=context_from_proto(request.context),
        policy=routing.policy.strip(),
        fallbacks=tuple(f for f in routing.fallbacks if f.strip()),
        bypass_cache=routing.bypass_cache,
        options=options_from_proto(request),
    )


def citation_to_proto(citation: Citation) -> common_pb2.Citation:
    passage = citation.passage
    return common_pb2.Citation(
        collection=passage.collection,
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        source=passage.source,
        score=passage.score,
        title=passage.title,
        heading=passage.heading,
        marker=citation.marker,
        cited=citation.cited,
        snippet=citation.snippet,
    )


def no_hit_response(call: ChatCall, prepared: Prepared) -> common_pb2.ChatResponse:
    """The answer when the collection does not answer: no model asked, no tokens, no cost."""
    return common_pb2.ChatResponse(
        id=new_completion_id(),
        model=call.model,
        message=common_pb2.ChatMessage(role="assistant", content=prepared.answer),
        finish_reason="stop",
        usage=usage_to_proto(Usage()),
        created=int(time.time()),
        rag_hit=False,
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(
        self,
        service: RouterService,
        books: UsageBooks,
        rag: RagStep | None = None,
        rag_client: RagClient | None = None,
    ) -> None:
        self.service = service
        self.books = books
        self.rag = rag
        self.rag_client = rag_client

    async def _prepare(
        self, request: common_pb2.ChatRequest, call: ChatCall, context: grpc.aio.ServicerContext
    ) -> Prepared | None:
        """With ``goblin.rag``: the call with the collection's passages in its prompt (or the no-hit
        answer), retrieved on behalf of the caller whose signed principal this call carried."""
        if not request.HasField("rag"):
            return None
        options = check_options(request.rag.collection, request.rag.top_k)
        if self.rag is None or self.rag_client is None:
            raise Unavailable("this router has no rag service", code="rag_unavailable")
        retriever = self.rag_client.as_caller(incoming_assertion(context.invocation_metadata()))
        return await self.rag.prepare(call, options, retriever)

    async def Chat(self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> common_pb2.ChatResponse:
        call = call_from_proto(request)
        prepared = await self._prepare(request, call, context)
        if prepared is not None and prepared.call is None:
            return no_hit_response(call, prepared)
        routed = await self.service.chat(call if prepared is None else prepared.routable())
        response = result_to_proto(routed.result)
        response.fallback_chain.extend(routed.fallback_chain)
        response.cost_usd = routed.cost_usd
        if prepared is not None:
            response.rag_hit = True
            response.citations.extend(citation_to_proto(c) for c in mark_cited(prepared.citations, routed.result.text))
        return response

    async def ChatStream(
        self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ChatChunk]:
        created = int(time.time())
        call = call_from_proto(request)
        prepared = await self._prepare(request, call, context)
        if prepared is not None and prepared.call is None:
            header = ChunkHeader(model=call.model, provider="", id=new_completion_id(), created=created)
            yield delta_to_proto(ChatDelta(text=prepared.answer), header, first=True)
            last = delta_to_proto(ChatDelta(finish_reason="stop", usage=Usage()), header, first=False)
            last.rag_hit = False
            yield last
            return
        header: ChunkHeader | None = None
        text: list[str] = []
        finished = False
        # Every delta of one stream comes from the same model: the service moves a stream to another
        # candidate only before its first delta.
        async for route, delta in self.service.stream(call if prepared is None else prepared.routable()):
            first = header is None
            if header is None:
                header = ChunkHeader(model=route.model_id, provider=route.provider, created=created)
            chunk = delta_to_proto(delta, header, first=first)
            text.append(delta.text)
            if prepared is not None and delta.finish_reason:
                # The last chunk carries the citations, marked against the whole answer.
                finished = True
                chunk.rag_hit = True
                chunk.citations.extend(citation_to_proto(c) for c in mark_cited(prepared.citations, "".join(text)))
            yield chunk
        if prepared is not None and not finished and header is not None:
            # A provider that ended without a finishing delta: the citations still arrive last.
            chunk = delta_to_proto(ChatDelta(finish_reason="stop"), header, first=False)
            chunk.rag_hit = True
            chunk.citations.extend(citation_to_proto(c) for c in mark_cited(prepared.citations, "".join(text)))
            yield chunk

    async def Embed(
        self, request: common_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.EmbedResponse:
        result = await self.service.embed(request.model, list(request.inputs), context_from_proto(request.context))
        return common_pb2.EmbedResponse(
            model=result.model,
            embeddings=[common_pb2.Embedding(values=v) for v in result.vectors],
            usage=usage_to_proto(Usage(prompt_tokens=result.prompt_tokens)),
            dimensions=result.dimensions,
        )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        models = await self.service.list_models()
        return common_pb2.ListModelsResponse(models=[model_info_to_proto(m) for m in models])

    async def GetUsage(
        self, request: router_pb2.UsageRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.UsageReport:
        caller = context_from_proto(request.context)
        tenant = request.tenant_id or caller.tenant_id
        caller_principal = current_principal()
        admin = caller_principal is not None and caller_principal.is_admin
        if not caller.tenant_id or ((tenant == "*" or tenant != caller.tenant_id) and not admin):
            raise PermissionDenied("only an admin may read another tenant's usage")
        if request.day:
            try:
                start = datetime.strptime(request.day, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise InvalidArgument("day must be YYYY-MM-DD") from None
        else:
            start = day_start(time.time())
        report = await self.books.usage(None if tenant == "*" else tenant, start, caller)
        return router_pb2.UsageReport(
            day=start.strftime("%Y-%m-%d"),
            cost_usd=report.cost_usd,
            budget_usd=report.budget_usd,
            requests=report.requests,
            prompt_tokens=report.prompt_tokens,
            completion_tokens=report.completion_tokens,
            fallbacks=report.fallbacks,
            errors=report.errors,
        )

    async def ListProviders(
        self, request: router_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListProvidersResponse:
        return router_pb2.ListProvidersResponse(
            providers=[
                router_pb2.ProviderState(
                    name=p.name,
                    configured=p.configured,
                    circuit=p.circuit,
                    p50_latency_ms=p.p50_latency_ms or 0.0,
                    consecutive_failures=p.consecutive_failures,
                    base_url=p.base_url,
                )
                for p in self.service.provider_states()
            ]
        )
