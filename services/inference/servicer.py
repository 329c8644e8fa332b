"""gRPC translation for the inference service: each request is translated once on entry and each
answer once on exit, with the shared translations of :mod:`services.common.chat`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from goblin.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.common.chat import (
    ChunkHeader,
    Usage,
    completion_to_proto,
    delta_to_proto,
    messages_from_proto,
    model_info_to_proto,
    new_completion_id,
    params_from_proto,
    result_to_proto,
    usage_to_proto,
)
from services.common.chat_content import options_from_proto
from services.inference.service import PROVIDER, InferenceService


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def Chat(self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> common_pb2.ChatResponse:
        result = await self.service.chat(
            request.model,
            messages_from_proto(request.messages),
            params_from_proto(request.params),
            options_from_proto(request),
        )
        return result_to_proto(result)

    async def ChatStream(
        self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ChatChunk]:
        header = ChunkHeader(model=self.service.chat_model.id, provider=PROVIDER, id=new_completion_id())
        stream = self.service.stream_chat(
            request.model,
            messages_from_proto(request.messages),
            params_from_proto(request.params),
            options_from_proto(request),
        )
        first = True
        # aclosing: when the client goes away gRPC cancels this coroutine, and the engine must hear of it
        # now, not when the generator is garbage-collected.
        async with aclosing(stream) as deltas:
            async for delta in deltas:
                yield delta_to_proto(delta, header, first=first)
                first = False

    async def Complete(
        self, request: common_pb2.CompletionRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.CompletionResponse:
        result = await self.service.complete(request.model, request.prompt, params_from_proto(request.params))
        return completion_to_proto(result)

    async def Embed(
        self, request: common_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.EmbedResponse:
        result = await self.service.embed(request.model, list(request.inputs))
        dimensions = len(result.vectors[0]) if result.vectors else 0
        return common_pb2.EmbedResponse(
            model=self.service.embedding_model.id,
            embeddings=[common_pb2.Embedding(values=v) for v in result.vectors],
            usage=usage_to_proto(Usage(prompt_tokens=result.total_tokens)),
            dimensions=dimensions,
        )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        return common_pb2.ListModelsResponse(models=[model_info_to_proto(m) for m in self.service.models])

    async def GetStatus(
        self, request: inference_pb2.InferenceStatusRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.InferenceStatus:
        stats = self.service.stats()
        engine = self.service.engine
        return inference_pb2.InferenceStatus(
            model_loaded=stats.loaded,
            model_path=str(engine.model_path),
            queue_length=stats.queue_length,
            queue_capacity=stats.queue_capacity,
            active_sequences=stats.active_sequences,
            n_ctx=engine.n_ctx,
            n_threads=stats.threads,  # decoding now: the configured maximum, or fewer under load
        )
