"""gRPC translation for the inference service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from goblin.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.common.chat import messages_from_proto, new_completion_id, params_from_proto
from services.inference.engine import Usage
from services.inference.service import PROVIDER, InferenceService


def usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def Chat(self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> common_pb2.ChatResponse:
        answer = await self.service.chat(
            request.model, messages_from_proto(list(request.messages)), params_from_proto(request.params)
        )
        return common_pb2.ChatResponse(
            id=new_completion_id(),
            model=self.service.model_name(self.service.chat_model),
            provider=PROVIDER,
            message=common_pb2.ChatMessage(role="assistant", content=answer.text),
            finish_reason=answer.finish_reason,
            usage=usage_proto(answer.usage),
            created=int(time.time()),
        )

    async def ChatStream(
        self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ChatChunk]:
        model = self.service.model_name(self.service.chat_model)
        completion_id, created = new_completion_id(), int(time.time())
        stream = self.service.stream_chat(
            request.model, messages_from_proto(list(request.messages)), params_from_proto(request.params)
        )
        first = True
        # aclosing: when the client goes away gRPC cancels this coroutine, and the engine must hear of it
        # now, not when the generator is garbage-collected.
        async with aclosing(stream) as events:
            async for event in events:
                chunk = common_pb2.ChatChunk(
                    id=completion_id,
                    model=model,
                    provider=PROVIDER,
                    role="assistant" if first else "",
                    delta=event.text,
                    finish_reason=event.finish_reason or "",
                    created=created,
                )
                if event.usage is not None:
                    chunk.usage.CopyFrom(usage_proto(event.usage))
                first = False
                yield chunk

    async def Complete(
        self, request: common_pb2.CompletionRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.CompletionResponse:
        answer = await self.service.complete(request.model, request.prompt, params_from_proto(request.params))
        return common_pb2.CompletionResponse(
            id=f"cmpl-{new_completion_id()[9:]}",
            model=self.service.model_name(self.service.chat_model),
            text=answer.text,
            finish_reason=answer.finish_reason,
            usage=usage_proto(answer.usage),
            created=int(time.time()),
        )

    async def Embed(
        self, request: common_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.EmbedResponse:
        result = await self.service.embed(request.model, list(request.inputs))
        dimensions = len(result.vectors[0]) if result.vectors else 0
        return common_pb2.EmbedResponse(
            model=self.service.model_name(self.service.embedding_model),
            embeddings=[common_pb2.Embedding(values=v) for v in result.vectors],
            usage=common_pb2.Usage(prompt_tokens=result.total_tokens, total_tokens=result.total_tokens),
            dimensions=dimensions,
        )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        return common_pb2.ListModelsResponse(
            models=[
                common_pb2.ModelInfo(
                    id=self.service.model_name(m),
                    provider=PROVIDER,
                    owned_by="goblin",
                    context_length=m.context_length,
                    capabilities=list(m.capabilities),
                    aliases=list(m.aliases),
                )
                for m in self.service.models
            ]
        )

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
            n_threads=engine.n_threads,
        )
