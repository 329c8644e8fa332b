"""The body of ``POST /api/query`` (DocQA): a question answered from the caller's collections."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.common.chat import (
    MAX_TOKENS_LIMIT,
    MAX_TOKENS_MIN,
    RAG_COLLECTION_MAX_CHARS,
    RAG_TOP_K_DEFAULT,
    RAG_TOP_K_MAX,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
)

MAX_QUERY_CHARS = 8000
MAX_CONTEXT_CHARS = 32_000


class DocQARequest(BaseModel):
    """A question, optionally the collection to answer it from (without one: every collection of the
    caller's tenant, as SPEC says), extra instructions or text (``context``, given to the model as a
    system message of the caller's), the model and how many passages to retrieve. Unknown fields are
    refused: a misspelt option should not be ignored."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    # A name of blanks is refused (400) rather than read as "all": only an absent collection (or null) is.
    collection: str | None = Field(None, min_length=1, max_length=RAG_COLLECTION_MAX_CHARS, pattern=r"\S")
    context: str | None = Field(None, max_length=MAX_CONTEXT_CHARS)
    model: str = Field("local", min_length=1, max_length=256)
    top_k: int = Field(RAG_TOP_K_DEFAULT, ge=1, le=RAG_TOP_K_MAX)
    max_tokens: Annotated[int, Field(ge=MAX_TOKENS_MIN, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None = None
