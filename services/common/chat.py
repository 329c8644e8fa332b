"""Chat domain types shared by the router and the inference service, and their protobuf translation.

Service logic works with these plain dataclasses; only servicers and gRPC adapters call the
``*_to_proto`` / ``*_from_proto`` functions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from goblin.v1 import common_pb2

ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    name: str = ""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    """A whole answer."""

    text: str
    finish_reason: str
    usage: Usage
    model: str  # "<provider>/<model>"
    provider: str
    id: str = field(default_factory=lambda: new_completion_id())
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class ChatDelta:
    """One piece of a streamed answer; the last one has ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# -- protobuf -----------------------------------------------------------------------------------


def messages_from_proto(messages: list[common_pb2.ChatMessage]) -> list[Message]:
    return [Message(role=m.role, content=m.content, name=m.name) for m in messages]


def messages_to_proto(messages: list[Message]) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=m.role, content=m.content, name=m.name) for m in messages]


def params_from_proto(params: common_pb2.SamplingParams) -> SamplingParams:
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
