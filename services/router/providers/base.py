"""What the router needs from a provider, whatever its wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams


@dataclass(frozen=True)
class ModelInfo:
    id: str  # "<provider>/<model>"
    provider: str
    owned_by: str
    context_length: int = 0
    capabilities: tuple[str, ...] = ()
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    aliases: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        return self.id.split("/", 1)[1]


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    dimensions: int


@dataclass(frozen=True)
class CallContext:
    """Who asked, for the provider's own accounting headers; never forwarded raw to third parties."""

    correlation_id: str = ""
    tenant_id: str = ""
    user_hash: str = ""
    api_key_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    name: str

    async def list_models(self) -> list[ModelInfo]: ...

    async def chat(
        self, model: str, messages: list[Message], params: SamplingParams, context: CallContext
    ) -> ChatResult: ...

    def stream(
        self, model: str, messages: list[Message], params: SamplingParams, context: CallContext
    ) -> AsyncIterator[ChatDelta]: ...

    async def embed(self, model: str, inputs: list[str], context: CallContext) -> Embeddings: ...
