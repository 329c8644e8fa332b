"""The ``local`` provider: the inference service, over gRPC. Its models are whatever the inference
service announces (``ListModels``), free of charge."""

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
    delta_from_proto,
    messages_to_proto,
    model_info_from_proto,
    params_to_proto,
    result_from_proto,
)
from services.common.chat_content import NO_OPTIONS, ChatOptions, options_to_proto
from services.common.errors import error_from_rpc
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings

MODELS_TTL_S = 30.0


class LocalProvider:
    name = "local"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = inference_pb2_grpc.InferenceStub(channel)
        self._models: list[ModelInfo] = []
        self._models_at = 0.0

    @property
    def configured(self) -> bool:
        return True

    async def list_models(self) -> list[ModelInfo]:
        if self._models and time.monotonic() - self._models_at < MODELS_TTL_S:
            return self._models
        try:
            reply = await self.stub.ListModels(common_pb2.ListModelsRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if self._models:
                return self._models  # stale beats nothing while the inference service restarts
            raise error_from_rpc(exc) from None
        self._models = [model_info_from_proto(m, ModelInfo) for m in reply.models]
        self._models_at = time.monotonic()
        return self._models

    def _request(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> common_pb2.ChatRequest:
        request = common_pb2.ChatRequest(
            model=spec.id,
            messages=messages_to_proto(messages),
            params=params_to_proto(params),
            # The correlation id goes along as call metadata (the channel's interceptor), not in here.
            context=common_pb2.RequestContext(),
        )
        options_to_proto(options, request)
        return request

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        request = self._request(spec, messages, params, context, options)
        try:
            return result_from_proto(await self.stub.Chat(request))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        request = self._request(spec, messages, params, context, options)
        call = self.stub.ChatStream(request)
        try:
            async for chunk in call:
                yield delta_from_proto(chunk)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            # Our caller went away (or we are done): stop the model generating for nobody.
            call.cancel()

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        try:
            reply = await self.stub.Embed(common_pb2.EmbedRequest(model=spec.id, inputs=inputs))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return Embeddings(
            model=reply.model,
            vectors=[list(e.values) for e in reply.embeddings],
            prompt_tokens=reply.usage.prompt_tokens,
            dimensions=reply.dimensions,
        )

    async def aclose(self) -> None:
        """The channel belongs to the server, which closes it."""
