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
from services.common.chat_content import (
    MAX_IMAGE_PARTS,
    MAX_TOP_LOGPROBS,
    ContentPart,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    check_part,
    check_tool_calls,
    logprobs_from_proto,
    logprobs_to_proto,
    parts_from_proto,
    parts_to_proto,
    tool_call_deltas_from_proto,
    tool_call_deltas_to_proto,
    tool_calls_from_proto,
    tool_calls_to_proto,
)
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
PENALTY_MIN = -2.0  # presence_penalty and frequency_penalty, as OpenAI bounds them
PENALTY_MAX = 2.0
LOGIT_BIAS_MIN = -100.0
LOGIT_BIAS_MAX = 100.0
MAX_LOGIT_BIAS_ENTRIES = 1024
# Bounds of retrieval on a chat (goblin.v1.RagOptions), checked by the router and the gateway's schemas.
RAG_TOP_K_DEFAULT = 4
RAG_TOP_K_MAX = 20
RAG_COLLECTION_MAX_CHARS = 128
# The rag service's read scope: answering from a tenant's documents needs it besides "chat".
RAG_SCOPE = "rag"


@dataclass(frozen=True)
class Message:
    """One turn of a conversation. ``content`` is its text; when the client sent the content as parts,
    ``parts`` has them all (text and images) and ``content`` the text parts joined, so a text-only hop
    (a cache key, a token estimate) needs no second case. An assistant turn may carry ``tool_calls``;
    a ``tool`` turn answers the call ``tool_call_id``."""

    role: str
    content: str
    name: str = ""
    parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    @property
    def has_images(self) -> bool:
        return any(part.is_image for part in self.parts)


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
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # token id -> bias; a sorted tuple of pairs so that the params stay hashable (cache keys).
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: bool = False
    top_logprobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise InvalidArgument("stop must be a list of non-empty strings")
        if not isinstance(self.stop, tuple):
            # Hashable and immutable like the rest, whatever sequence the caller had.
            object.__setattr__(self, "stop", tuple(self.stop))
        bias = self.logit_bias
        if isinstance(bias, dict):
            bias = bias.items()
        object.__setattr__(self, "logit_bias", tuple(sorted((k, float(v)) for k, v in bias)))
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
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ChatDelta:
    """One piece of a streamed answer; the last one has ``finish_reason`` and ``usage``, and no text.
    ``tool_calls`` are pieces of calls as OpenAI streams them (the first piece of a call has its index,
    id and name; later ones more of its arguments); ``logprobs`` those of this piece's tokens."""

    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


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
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if value is not None and not PENALTY_MIN <= value <= PENALTY_MAX:
            raise InvalidArgument(f"{name} must be between {PENALTY_MIN:g} and {PENALTY_MAX:g}")
    if len(params.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidArgument(f"logit_bias: at most {MAX_LOGIT_BIAS_ENTRIES} tokens")
    for token, bias in params.logit_bias:
        if not isinstance(token, int) or not 0 <= token < 2**31:
            raise InvalidArgument("logit_bias keys must be token ids (non-negative integers)")
        if not LOGIT_BIAS_MIN <= bias <= LOGIT_BIAS_MAX:
            raise InvalidArgument(f"logit_bias values must be between {LOGIT_BIAS_MIN:g} and {LOGIT_BIAS_MAX:g}")
    if params.top_logprobs is not None:
        if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidArgument(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        if not params.logprobs:
            raise InvalidArgument("top_logprobs needs logprobs: true")


def check_messages(messages: Sequence[Message]) -> None:
    """Raise ``InvalidArgument`` unless ``messages`` is a non-empty conversation of known roles whose
    content parts, tool calls and tool answers are well formed: images only from the user, calls only
    by the assistant, and every ``tool`` message answering a call an earlier assistant turn made."""
    if not messages:
        raise InvalidArgument("messages must not be empty")
    calls: set[str] = set()
    images = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in ROLES:
            raise InvalidArgument(f"{where}.role must be one of {sorted(ROLES)}")
        if not isinstance(message.content, str):
            raise InvalidArgument(f"{where}.content must be a string")
        for j, part in enumerate(message.parts):
            check_part(part, f"{where}.content[{j}]")
            if part.is_image:
                if message.role != "user":
                    raise InvalidArgument(f"{where}.content[{j}]: image parts only in user messages")
                images += 1
        if message.tool_calls:
            if message.role != "assistant":
                raise InvalidArgument(f"{where}.tool_calls: only an assistant message makes tool calls")
            check_tool_calls(message.tool_calls, where)
            calls.update(call.id for call in message.tool_calls)
        if message.role == "tool":
            if not message.tool_call_id:
                raise InvalidArgument(f"{where}.tool_call_id: a tool message must name the call it answers")
            if message.tool_call_id not in calls:
                raise InvalidArgument(
                    f"{where}.tool_call_id: {message.tool_call_id[:64]!r} answers no tool call of an earlier "
                    "assistant message"
                )
        elif message.tool_call_id:
            raise InvalidArgument(f"{where}.tool_call_id: only a tool message answers a call")
    if images > MAX_IMAGE_PARTS:
        raise InvalidArgument(f"messages: at most {MAX_IMAGE_PARTS} images")


def template_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """``messages``, checked, as the plain dicts a model's Jinja chat template iterates over."""
    check_messages(messages)
    return [{"role": m.role, "content": m.content} for m in messages]


# -- protobuf -----------------------------------------------------------------------------------


def messages_from_proto(messages: Sequence[common_pb2.ChatMessage]) -> list[Message]:
    return [
        Message(
            role=m.role,
            content=m.content,
            name=m.name,
            parts=parts_from_proto(m.parts),
            tool_calls=tool_calls_from_proto(m.tool_calls),
            tool_call_id=m.tool_call_id,
        )
        for m in messages
    ]


def messages_to_proto(messages: Sequence[Message]) -> list[common_pb2.ChatMessage]:
    return [
        common_pb2.ChatMessage(
            role=m.role,
            content=m.content,
            name=m.name,
            parts=parts_to_proto(m.parts),
            tool_calls=tool_calls_to_proto(m.tool_calls),
            tool_call_id=m.tool_call_id,
        )
        for m in messages
    ]


def params_from_proto(params: common_pb2.SamplingParams) -> SamplingParams:
    """The request's parameters; raises ``InvalidArgument`` when one is out of bounds."""
    return SamplingParams(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        stop=tuple(params.stop),
        seed=params.seed if params.HasField("seed") else None,
        presence_penalty=params.presence_penalty if params.HasField("presence_penalty") else None,
        frequency_penalty=params.frequency_penalty if params.HasField("frequency_penalty") else None,
        logit_bias=tuple(params.logit_bias.items()),
        logprobs=params.logprobs,
        top_logprobs=params.top_logprobs if params.HasField("top_logprobs") else None,
    )


def params_to_proto(params: SamplingParams) -> common_pb2.SamplingParams:
    message = common_pb2.SamplingParams(
        stop=list(params.stop), logit_bias=dict(params.logit_bias), logprobs=params.logprobs
    )
    if params.max_tokens is not None:
        message.max_tokens = params.max_tokens
    if params.temperature is not None:
        message.temperature = params.temperature
    if params.top_p is not None:
        message.top_p = params.top_p
    if params.seed is not None:
        message.seed = params.seed
    if params.presence_penalty is not None:
        message.presence_penalty = params.presence_penalty
    if params.frequency_penalty is not None:
        message.frequency_penalty = params.frequency_penalty
    if params.top_logprobs is not None:
        message.top_logprobs = params.top_logprobs
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
        message=common_pb2.ChatMessage(
            role="assistant", content=result.text, tool_calls=tool_calls_to_proto(result.tool_calls)
        ),
        finish_reason=result.finish_reason,
        usage=usage_to_proto(result.usage),
        created=result.created,
        logprobs=logprobs_to_proto(result.logprobs),
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
        tool_calls=tool_calls_from_proto(response.message.tool_calls),
        logprobs=logprobs_from_proto(response.logprobs),
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
        tool_calls=tool_call_deltas_to_proto(delta.tool_calls),
        logprobs=logprobs_to_proto(delta.logprobs),
    )
    if delta.usage is not None:
        chunk.usage.CopyFrom(usage_to_proto(delta.usage))
    return chunk


def delta_from_proto(chunk: common_pb2.ChatChunk) -> ChatDelta:
    return ChatDelta(
        text=chunk.delta,
        finish_reason=chunk.finish_reason,
        usage=usage_from_proto(chunk.usage) if chunk.HasField("usage") else None,
        tool_calls=tool_call_deltas_from_proto(chunk.tool_calls),
        logprobs=logprobs_from_proto(chunk.logprobs),
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
