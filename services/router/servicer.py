"""gRPC translation for the router."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from goblin.v1 import common_pb2, router_pb2_grpc
from services.common.chat import messages_from_proto, params_from_proto, result_to_proto, usage_to_proto
from services.common.context import hash_user_id
from services.router.providers.base import CallContext
from services.router.service import ChatCall, RouterService


def call_from_proto(request: common_pb2.ChatRequest) -> ChatCall:
    ctx = request.context
    return ChatCall(
        model=request.model,
        messages=messages_from_proto(list(request.messages)),
        params=params_from_proto(request.params),
        context=CallContext(
            correlation_id=ctx.correlation_id,
            tenant_id=ctx.tenant_id,
            user_hash=hash_user_id(ctx.user_id),
            api_key_id=ctx.api_key_id,
        ),
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, service: RouterService) -> None:
        self.service = service

    async def Chat(
        self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ChatResponse:
        return result_to_proto(await self.service.chat(call_from_proto(request)))

    async def ChatStream(
        self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ChatChunk]:
        first = True
        async for route, delta in self.service.stream(call_from_proto(request)):
            chunk = common_pb2.ChatChunk(
                model=route.model_id,
                provider=route.provider.name,
                delta=delta.text,
                finish_reason=delta.finish_reason,
                role="assistant" if first else "",
            )
            if delta.usage is not None:
                chunk.usage.CopyFrom(usage_to_proto(delta.usage))
            first = False
            yield chunk

    async def Embed(
        self, request: common_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.EmbedResponse:
        ctx = request.context
        result = await self.service.embed(
            request.model,
            list(request.inputs),
            CallContext(
                correlation_id=ctx.correlation_id,
                tenant_id=ctx.tenant_id,
                user_hash=hash_user_id(ctx.user_id),
            ),
        )
        return common_pb2.EmbedResponse(
            model=result.model,
            embeddings=[common_pb2.Embedding(values=v) for v in result.vectors],
            usage=common_pb2.Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            dimensions=result.dimensions,
        )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        models = await self.service.list_models()
        return common_pb2.ListModelsResponse(
            models=[
                common_pb2.ModelInfo(
                    id=m.id,
                    provider=m.provider,
                    owned_by=m.owned_by,
                    context_length=m.context_length,
                    capabilities=list(m.capabilities),
                    input_price_per_mtok=m.input_price_per_mtok,
                    output_price_per_mtok=m.output_price_per_mtok,
                    aliases=list(m.aliases),
                )
                for m in models
            ]
        )
