"""The ``local`` provider: the inference service, over gRPC."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from goblin.v1 import common_pb2, inference_pb2_grpc
from services.common.chat import (
    ChatDelta,
    ChatResult,
    Message,
    SamplingParams,
    messages_to_proto,
    params_to_proto,
    result_from_proto,
    usage_from_proto,
)
from services.common.errors import NotFound, error_from_rpc
from services.router.providers.base import CallContext, Embeddings, ModelInfo

MODELS_TTL_S = 30.0


class LocalProvider:
    name = "local"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = inference_pb2_grpc.InferenceStub(channel)
        self._models: list[ModelInfo] = []
        self._models_at = 0.0

    async def list_models(self) -> list[ModelInfo]:
        if self._models and time.monotonic() - self._models_at < MODELS_TTL_S:
            return self._models
        try:
            reply = await self.stub.ListModels(common_pb2.ListModelsRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        self._models = [
            ModelInfo(
                id=m.id,
                provider=self.name,
                owned_by=m.owned_by or "goblin",
                context_length=m.context_length,
                capabilities=tuple(m.capabilities),
                aliases=tuple(m.aliases),
            )
            for m in reply.models
        ]
        self._models_at = time.monotonic()
        return self._models

    async def _request(
        self, model: str, messages: list[Message], params: SamplingParams, context: CallContext
    ) -> common_pb2.ChatRequest:
        known = {m.model for m in await self.list_models() if "chat" in m.capabilities}
        if model not in known:
            raise NotFound(f"model 'local/{model}' not found", code="model_not_found")
        return common_pb2.ChatRequest(
            model=f"{self.name}/{model}",
            messages=messages_to_proto(messages),
            params=params_to_proto(params),
            context=common_pb2.RequestContext(
                correlation_id=context.correlation_id, tenant_id=context.tenant_id
            ),
        )

    async def chat(
        self, model: str, messages: list[Message], params: SamplingParams, context: CallContext
    ) -> ChatResult:
        request = await self._request(model, messages, params, context)
        try:
            return result_from_proto(await self.stub.Chat(request))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def stream(
        self, model: str, messages: list[Message], params: SamplingParams, context: CallContext
    ) -> AsyncIterator[ChatDelta]:
        request = await self._request(model, messages, params, context)
        call = self.stub.ChatStream(request)
        try:
            async for chunk in call:
                yield ChatDelta(
                    text=chunk.delta,
                    finish_reason=chunk.finish_reason,
                    usage=usage_from_proto(chunk.usage) if chunk.HasField("usage") else None,
                )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            # Our caller went away (or we are done): stop the model generating for nobody.
            call.cancel()

    async def embed(self, model: str, inputs: list[str], context: CallContext) -> Embeddings:
        known = {m.model for m in await self.list_models() if "embeddings" in m.capabilities}
        if model not in known:
            raise NotFound(f"embedding model 'local/{model}' not found", code="model_not_found")
        try:
            reply = await self.stub.Embed(
                common_pb2.EmbedRequest(
                    model=f"{self.name}/{model}",
                    inputs=inputs,
                    context=common_pb2.RequestContext(correlation_id=context.correlation_id),
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return Embeddings(
            model=reply.model,
            vectors=[list(e.values) for e in reply.embeddings],
            prompt_tokens=reply.usage.prompt_tokens,
            dimensions=reply.dimensions,
        )
