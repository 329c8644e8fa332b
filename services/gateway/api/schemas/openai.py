"""Request bodies of the OpenAI-compatible API, validated before anything is sent anywhere.

Unknown fields are accepted and ignored, as OpenAI clients send many; values we cannot honour
(``n > 1``, token-array inputs) are refused with a 400 rather than silently changed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The bounds every hop checks, from the one place they are defined (services.common.chat): the
# gateway refuses out-of-range values with a 400 before anything is forwarded.
from services.common.chat import (
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    MAX_TOKENS_MIN,
    RAG_COLLECTION_MAX_CHARS,
    RAG_TOP_K_DEFAULT,
    RAG_TOP_K_MAX,
    SEED_MAX,
    SEED_MIN,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
    TOP_P_MAX,
    TOP_P_MIN,
)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text":
                raise ValueError(f"content part type {part.type!r} is not supported (only 'text')")
            parts.append(part.text or "")
        return "".join(parts)


class RagRequest(BaseModel):
    """``goblin.rag``: answer from the passages of one of the caller's collections (needs the ``rag``
    scope); the answer comes with ``citations``."""

    model_config = ConfigDict(extra="forbid")
    collection: str = Field(min_length=1, max_length=RAG_COLLECTION_MAX_CHARS)
    top_k: int = Field(RAG_TOP_K_DEFAULT, ge=1, le=RAG_TOP_K_MAX)


class GoblinOptions(BaseModel):
    """Goblin's own extension of the request: retrieval and routing."""

    model_config = ConfigDict(extra="forbid")
    rag: RagRequest | None = None
    policy: str | None = Field(None, max_length=64)
    fallbacks: list[str] = Field(default_factory=list, max_length=8)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None = None
    top_p: Annotated[float, Field(gt=TOP_P_MIN, le=TOP_P_MAX)] | None = None
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    goblin: GoblinOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return stops

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field("local", min_length=1, max_length=256)
    input: str | list[str] = Field(description="a string or a list of strings (token arrays are not supported)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> list[str]:
        inputs = [value] if isinstance(value, str) else value
        if not inputs:
            raise ValueError("input must not be empty")
        if len(inputs) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return inputs


class InvokeRequest(BaseModel):
    """The old single-prompt endpoint, kept for existing clients."""

    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1)
    provider: str = Field("local", min_length=1, max_length=64)
    model: str | None = Field(None, max_length=256)
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None = None
