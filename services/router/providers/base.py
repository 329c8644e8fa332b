"""What the router needs from a provider, whatever its wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions
from services.router.models import ModelInfo


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
    scopes: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    # The caller's budgets as auth verified them (forwarded by the gateway); None: unlimited.
    tenant_daily_budget_usd: float | None = None
    key_tokens_per_day: int | None = None


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about four characters a token), for when a provider does not
    report usage or a stream breaks before it does."""
    return (len(text) + 3) // 4


def estimate_usage(messages: list[Message], text: str) -> Usage:
    return Usage(
        prompt_tokens=sum(estimate_tokens(m.content) + 4 for m in messages),
        completion_tokens=estimate_tokens(text),
    )


class Provider(Protocol):
    """A provider adapter. ``model`` arguments are the provider's own model names; ``spec`` is the
    catalog entry of that model (limits, parameters it refuses)."""

    name: str

    @property
    def configured(self) -> bool:
        """Whether it can be called (has its key, or needs none)."""

    async def list_models(self) -> list[ModelInfo]:
        """Models the provider announces itself (``local``); catalog-driven providers return none."""

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult: ...

    def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]: ...

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings: ...

    async def aclose(self) -> None: ...
