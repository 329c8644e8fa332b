"""The router service as the gateway uses it: chat (unary and streamed), embeddings, the model list.

The chat path is the hot path: requests and answers stay the protobuf messages the routes build and
read (a dataclass in between would be a copy per request); only the error translation is added here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from goblin.v1 import common_pb2, router_pb2, router_pb2_grpc
from services.gateway.clients.base import ServiceClient
from services.gateway.clients.identity import metadata


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model the router can reach, as ``GET /v1/models`` lists it."""

    id: str
    provider: str
    owned_by: str
    aliases: tuple[str, ...]
    capabilities: tuple[str, ...]
    context_length: int


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors in input order; each is the reply's own repeated field, not a copy."""

    model: str
    vectors: list[Sequence[float]]
    prompt_tokens: int


class ChatStream:
    """A streamed chat completion: chunks until ``None``; a failure, at the first chunk or mid-stream,
    is raised as :class:`~services.gateway.errors.ApiError`."""

    __slots__ = ("_call", "_client")

    def __init__(self, client: ServiceClient, call: grpc.aio.UnaryStreamCall) -> None:
        self._client = client
        self._call = call

    async def read(self) -> common_pb2.ChatChunk | None:
        """The next chunk, or ``None`` once the stream has ended."""
        try:
            chunk = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._client.error(exc) from None
        return None if chunk is grpc.aio.EOF else chunk

    def cancel(self) -> None:
        """Stop the stream (a no-op once it has ended): frees the model when the client went away."""
        self._call.cancel()


class RouterClient(ServiceClient):
    """Typed calls to ``goblin.v1.Router``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__("router", channel)
        self._stub = router_pb2_grpc.RouterStub(channel)

    async def chat(self, request: common_pb2.ChatRequest, deadline_s: float) -> common_pb2.ChatResponse:
        """One whole chat completion."""
        return await self.call(self._stub.Chat, request, deadline_s)

    def chat_stream(self, request: common_pb2.ChatRequest, deadline_s: float) -> ChatStream:
        """A streamed chat completion; nothing is awaited until the first :meth:`ChatStream.read`."""
        return ChatStream(self, self._stub.ChatStream(request, timeout=deadline_s, metadata=metadata()))

    async def embed(
        self, model: str, inputs: list[str], context: common_pb2.RequestContext, deadline_s: float
    ) -> Embeddings:
        """Embeddings of ``inputs`` by ``model``."""
        reply = await self.call(
            self._stub.Embed, common_pb2.EmbedRequest(model=model, inputs=inputs, context=context), deadline_s
        )
        return Embeddings(reply.model, [e.values for e in reply.embeddings], reply.usage.prompt_tokens)

    async def list_models(self, context: common_pb2.RequestContext) -> list[ModelInfo]:
        """Every model the router can reach."""
        reply = await self.call(self._stub.ListModels, common_pb2.ListModelsRequest(context=context))
        return [
            ModelInfo(
                id=m.id,
                provider=m.provider,
                owned_by=m.owned_by,
                aliases=tuple(m.aliases),
                capabilities=tuple(m.capabilities),
                context_length=m.context_length,
            )
            for m in reply.models
        ]

    async def get_usage(
        self, context: common_pb2.RequestContext, tenant_id: str = "", deadline_s: float | None = None
    ) -> router_pb2.UsageReport:
        """Today's books for ``tenant_id`` (empty: the caller's tenant; ``"*"``, admins only: everyone)."""
        request = router_pb2.UsageRequest(context=context, tenant_id=tenant_id)
        return await self.call(self._stub.GetUsage, request, deadline_s)

    async def list_providers(self, deadline_s: float | None = None) -> list[router_pb2.ProviderState]:
        """Every provider the router knows: configured or not, its circuit breaker, its latency."""
        reply = await self.call(self._stub.ListProviders, router_pb2.ListProvidersRequest(), deadline_s)
        return list(reply.providers)
