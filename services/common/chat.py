"""The chat domain, shared by the router, its providers and the inference service: the types, the one
check of their values, and their protobuf translation.

Service logic works with these plain dataclasses; only servicers and gRPC adapters call the
``*_to_proto`` / ``*_from_proto`` functions, once per hop: a request on entry, the answer on exit.

A :class:`SamplingParams` checks its values when it is made, so one that exists is valid wherever it
travels; the bounds are module constants so that the gateway's HTTP schema refuses the same values
with the same numbers before a request leaves it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from goblin.v1 import common_pb2
from services.common.errors import InvalidArgument

ROLES = frozenset({"system", "user", "assistant", "tool"})

# Bounds of the sampling parameters (goblin.v1.SamplingParams), checked by check_sampling_params.
MAX_TOKENS_MIN = 1
MAX_TOKENS_LIMIT = 32_768
TEMPERATURE_MIN = 0.0
TEMPERATURE_MAX = 2.0
TOP_P_MIN = 0.0  # exclusive: top_p must be greater than this
TOP_P_MAX = 1.0
MAX_STOP_SEQUENCES = 4
SEED_MIN = -(2**63)  # the range of the proto's int64
SEED_MAX = 2**63 - 1
# Bounds of retrieval on a chat (goblin.v1.RagOptions), checked by the router and the gateway's schemas.
RAG_TOP_K_DEFAULT = 4
RAG_TOP_K_MAX = 20
RAG_COLLECTION_MAX_CHARS = 128
# The rag service's read scope: answering from a tenant's documents needs it besides "chat".
RAG_SCOPE = "rag"


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: str
    content: str
    name: str = ""


@dataclass(frozen=True)
class SamplingParams:
    """How to generate, shared by chat and text completion. None leaves the choice to the model that
    answers (a catalog default, a provider's own, or the local engine's). ``stop`` strings end the
    output before they appear. Raises ``InvalidArgument`` when a value is out of bounds."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise InvalidArgument("stop must be a list of non-empty strings")
        if not isinstance(self.stop, tuple):
            # Hashable and immutable like the rest, whatever sequence the caller had.
            object.__setattr__(self, "stop", tuple(self.stop))
        check_sampling_params(self)


@dataclass(frozen=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    """A whole answer. ``model`` ("<provider>/<model>") and ``provider`` are empty only where it is made
    by code that does not know the model's public name (the local engine); its service fills them."""

    text: str
    finish_reason: str  # stop | length | cancelled | content_filter | tool_calls
    usage: Usage
    model: str = ""
    provider: str = ""
    id: str = field(default_factory=lambda: new_completion_id())
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class ChatDelta:
    """One piece of a streamed answer; the last one has ``finish_reason`` and ``usage``, and no text."""

    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None


@dataclass(frozen=True)
class ChunkHeader:
    """What every chunk of one streamed answer repeats."""

    model: str
    provider: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))


class DescribedModel(Protocol):
    """What a model listing says of a model: the router's catalog entries and the inference service's
    local models each have these attributes, so one translation serves both."""

    @property
    def id(self) -> str: ...  # "<provider>/<model>"
    @property
    def provider(self) -> str: ...
    @property
    def owned_by(self) -> str: ...
    @property
    def context_length(self) -> int: ...
    @property
    def capabilities(self) -> tuple[str, ...]: ...  # chat | completion | embeddings | streaming
    @property
    def input_price_per_mtok(self) -> float: ...
    @property
    def output_price_per_mtok(self) -> float: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...


M = TypeVar("M")


def new_completion_id(prefix: str = "chatcmpl") -> str:
    """An OpenAI-style answer id: ``chatcmpl-...`` for chat, ``cmpl-...`` for text completion."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# -- the one check of each value ----------------------------------------------------------------


def check_sampling_params(params: SamplingParams) -> None:
    """Raise ``InvalidArgument`` for a value no model accepts. Limits of one model (its context window)
    are checked by whoever knows that model."""
    if params.max_tokens is not None and not isinstance(params.max_tokens, int):
        raise InvalidArgument("max_tokens must be an integer")
    if params.max_tokens is not None and params.max_tokens < MAX_TOKENS_MIN:
        raise InvalidArgument(f"max_tokens must be at least {MAX_TOKENS_MIN}")
    if params.max_tokens is not None and params.max_tokens > MAX_TOKENS_LIMIT:
        raise InvalidArgument(f"max_tokens must be at most {MAX_TOKENS_LIMIT}")
    if params.temperature is not None and not TEMPERATURE_MIN <= params.temperature <= TEMPERATURE_MAX:
        raise InvalidArgument(f"temperature must be between {TEMPERATURE_MIN:g} and {TEMPERATURE_MAX:g}")
    if params.top_p is not None and not TOP_P_MIN < params.top_p <= TOP_P_MAX:
        raise InvalidArgument(f"top_p must be in ({TOP_P_MIN:g}, {TOP_P_MAX:g}]")
    if len(params.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if not all(isinstance(stop, str) and stop for stop in params.stop):
        raise InvalidArgument("stop must be a list of non-empty strings")
    if params.seed is not None and (not isinstance(params.seed, int) or not SEED_MIN <= params.seed <= SEED_MAX):
        raise InvalidArgument("seed must be a 64-bit integer")


def check_messages(messages: Sequence[Message]) -> None:
    """Raise ``InvalidArgument`` unless ``messages`` is a non-empty conversation of known roles."""
    if not messages:
        raise InvalidArgument("messages must not be empty")
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidArgument(f"messages[{i}].role must be one of {sorted(ROLES)}")
        if not isinstance(message.content, str):
            raise InvalidArgument(f"messages[{i}].content must be a string")


def template_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """``messages``, checked, as the plain dicts a model's Jinja chat template iterates over."""
    check_messages(messages)
    return [{"role": m.role, "content": m.content} for m in messages]


# -- protobuf -----------------------------------------------------------------------------------


def messages_from_proto(messages: Sequence[common_pb2.ChatMessage]) -> list[Message]:
    return [Message(role=m.role, content=m.content, name=m.name) for m in messages]


def messages_to_proto(messages: Sequence[Message]) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=m.role, content=m.content, name=m.name) for m in messages]


def params_from_proto(params: common_pb2.SamplingParams) -> SamplingParams:
    """The request's parameters; raises ``InvalidArgument`` when one is out of bounds."""
    return SamplingParams(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        stop=tuple(params.stop),
        seed=params.seed if params.HasField("seed") else None,
    )


def params_to_proto(params: SamplingParams) -> common_pb2.SamplingParams:
    message = common_pb2.SamplingParams(stop=list(params.stop))
    if params.max_tokens is not None:
        message.max_tokens = params.max_tokens
    if params.temperature is not None:
        message.temperature = params.temperature
    if params.top_p is not None:
        message.top_p = params.top_p
    if params.seed is not None:
        message.seed = params.seed
    return message


def usage_to_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def usage_from_proto(usage: common_pb2.Usage) -> Usage:
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def result_to_proto(result: ChatResult) -> common_pb2.ChatResponse:
    return common_pb2.ChatResponse(
        id=result.id,
        model=result.model,
        provider=result.provider,
        message=common_pb2.ChatMessage(role="assistant", content=result.text),
        finish_reason=result.finish_reason,
        usage=usage_to_proto(result.usage),
        created=result.created,
    )


def result_from_proto(response: common_pb2.ChatResponse) -> ChatResult:
    return ChatResult(
        id=response.id,
        text=response.message.content,
        finish_reason=response.finish_reason,
        usage=usage_from_proto(response.usage),
        model=response.model,
        provider=response.provider,
        created=response.created,
    )


def completion_to_proto(result: ChatResult) -> common_pb2.CompletionResponse:
    """A text completion's answer (the legacy API has no provider and no message, only text)."""
    return common_pb2.CompletionResponse(
        id=result.id,
        model=result.model,
        text=result.text,
        finish_reason=result.finish_reason,
        usage=usage_to_proto(result.usage),
        created=result.created,
    )


def delta_to_proto(delta: ChatDelta, header: ChunkHeader, *, first: bool) -> common_pb2.ChatChunk:
    """One chunk of a stream; the first one names the assistant role, as OpenAI's streams do."""
    chunk = common_pb2.ChatChunk(
        id=header.id,
        model=header.model,
        provider=header.provider,
        role="assistant" if first else "",
        delta=delta.text,
        finish_reason=delta.finish_reason,
        created=header.created,
    )
    if delta.usage is not None:
        chunk.usage.CopyFrom(usage_to_proto(delta.usage))
    return chunk


def delta_from_proto(chunk: common_pb2.ChatChunk) -> ChatDelta:
    return ChatDelta(
        text=chunk.delta,
        finish_reason=chunk.finish_reason,
        usage=usage_from_proto(chunk.usage) if chunk.HasField("usage") else None,
    )


def model_info_to_proto(model: DescribedModel) -> common_pb2.ModelInfo:
    return common_pb2.ModelInfo(
        id=model.id,
        provider=model.provider,
        owned_by=model.owned_by,
        context_length=model.context_length,
        capabilities=list(model.capabilities),
        input_price_per_mtok=model.input_price_per_mtok,
        output_price_per_mtok=model.output_price_per_mtok,
        aliases=list(model.aliases),
    )


def model_info_from_proto(message: common_pb2.ModelInfo, factory: Callable[..., M]) -> M:
    """``factory`` (a model type with the :class:`DescribedModel` fields) called with the message's fields."""
    return factory(
        id=message.id,
        provider=message.provider,
        owned_by=message.owned_by,
        context_length=message.context_length,
        capabilities=tuple(message.capabilities),
        input_price_per_mtok=message.input_price_per_mtok,
        output_price_per_mtok=message.output_price_per_mtok,
        aliases=tuple(message.aliases),
    )
