"""Request bodies of the OpenAI-compatible API, validated before anything is sent anywhere.

Unknown fields: a top-level field Goblin does not know is accepted and ignored (clients and SDKs send
vendor extras), and named in the ``X-Goblin-Ignored-Params`` response header; an OpenAI parameter
Goblin knows and cannot honour (``audio``, ``prediction``, ``web_search_options``, ``store: true``,
token-array inputs, ...) is refused with a 400 naming it rather than silently dropped. Inside a tool
or a response format (where a misspelt field would change the request's meaning) unknown fields are
refused; inside a message they are ignored (the SDK echoes an answer's ``annotations``, ``audio``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The bounds every hop checks, from the one place they are defined (services.common.chat): the
# gateway refuses out-of-range values with a 400 before anything is forwarded.
from services.common.chat import (
    LOGIT_BIAS_MAX,
    LOGIT_BIAS_MIN,
    MAX_LOGIT_BIAS_ENTRIES,
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
from services.common.chat_content import MAX_TOOLS, MAX_TOP_LOGPROBS, MAX_USER_CHARS

# The most choices one request may ask for (``n``): each is a model call of its own.
MAX_CHOICES = 8
# OpenAI parameters that change the answer and that Goblin cannot honour: refused, never ignored.
UNSUPPORTED_PARAMS = ("audio", "prediction", "web_search_options")
METADATA_MAX_KEYS = 16


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """``text`` or ``image_url`` (https or a base64 ``data:`` URL, checked by services.common.chat_content)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    arguments: str = ""


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    """One message. ``function`` (a legacy function result) becomes a ``tool`` message answering the
    assistant's last ``function_call`` of that name."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=256)
    function_call: FunctionCallIn | None = None  # legacy: an assistant's one call
    refusal: str | None = None  # an assistant answer echoed back by the SDK

    def text(self) -> str:
        """The content's text: the string, or the text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


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


def stop_list(value: str | list[str] | None) -> list[str] | None:
    """``stop`` as a list (one string or up to four)."""
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    return stops


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's bounds on ``metadata``: 16 pairs, keys of 64 and values of 512 characters."""
    if value is not None:
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} pairs")
        if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("keys of at most 64 and values of at most 512 characters")
    return value


class OpenAIBody(BaseModel):
    """What the chat and text completion bodies share: unknown top-level fields are kept (to name them
    in ``X-Goblin-Ignored-Params``) and known-but-unsupported ones refused."""

    model_config = ConfigDict(extra="allow")

    @property
    def ignored(self) -> list[str]:
        """The unknown top-level fields this request sent (ignored)."""
        return sorted(self.model_extra or ())

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> OpenAIBody:
        for name in UNSUPPORTED_PARAMS:
            if (self.model_extra or {}).get(name) is not None:
                raise ValueError(f"{name} is not supported")
        if (self.model_extra or {}).get("store") is True:
            raise ValueError("store: true is not supported (Goblin keeps no completions for later retrieval)")
        modalities = (self.model_extra or {}).get("modalities")
        if modalities not in (None, ["text"]):
            raise ValueError("modalities: only ['text'] is supported")
        return self


class ChatCompletionRequest(OpenAIBody):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None = None
    top_p: Annotated[float, Field(gt=TOP_P_MIN, le=TOP_P_MAX)] | None = None
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"1 to {MAX_CHOICES} choices, each a model call")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)
    metadata: dict[str, str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=LOGIT_BIAS_MIN, le=LOGIT_BIAS_MAX)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS_ENTRIES
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = Field(None, max_length=MAX_TOOLS)  # legacy tools
    function_call: Literal["none", "auto"] | NamedFunction | None = None  # legacy tool_choice
    response_format: ResponseFormatIn | None = None
    goblin: GoblinOptions | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @property
    def legacy_functions(self) -> bool:
        """Whether the request used ``functions`` (the answer then has ``function_call``)."""
        return bool(self.functions) and not self.tools

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(OpenAIBody):
    """``POST /v1/completions`` (legacy text completion): the prompt goes to the chat model as one
    user message. ``logprobs`` is the number of alternatives per token (0-5), as in that API."""

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] = Field(description="a string, or a list of one string (token arrays are refused)")
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None = None
    top_p: Annotated[float, Field(gt=TOP_P_MIN, le=TOP_P_MAX)] | None = None
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=LOGIT_BIAS_MIN, le=LOGIT_BIAS_MAX)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS_ENTRIES
    )
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    user: str | None = Field(None, max_length=MAX_USER_CHARS)
    goblin: GoblinOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1:
            raise ValueError("exactly one prompt per request (send n for several answers)")
        return prompts[0]

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> None:
        if value:
            raise ValueError("suffix (insertion) is not supported")
        return None


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
