"""What a request needs of a model, and the refusal when the model it named lacks it.

A request that sends tools, a response format, images or asks for logprobs can only be served by a
model whose catalog entry (or, for local models, the inference service's listing) has the matching
capability. The planner keeps only such models among a policy's members and the request's fallbacks;
a model the request named itself that lacks one is refused here with a 400 that names the parameter
and the model, before any provider is called. Nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.chat_content import (
    CAP_JSON,
    CAP_JSON_SCHEMA,
    CAP_LOGPROBS,
    CAP_TOOLS,
    CAP_VISION,
)
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo

# The request parameter that makes each capability necessary, as the client wrote it.
PARAMETERS = {
    CAP_TOOLS: "tools",
    CAP_JSON: "response_format (json_object)",
    CAP_JSON_SCHEMA: "response_format (json_schema)",
    CAP_VISION: "image_url content parts",
    CAP_LOGPROBS: "logprobs",
}


def missing(model: ModelInfo, needed: Iterable[str]) -> list[str]:
    """The capabilities of ``needed`` that ``model`` lacks, in a stable order."""
    have = set(model.capabilities)
    return sorted(c for c in needed if c not in have)


def serves(model: ModelInfo, needed: frozenset[str]) -> bool:
    """Whether ``model`` has every capability of ``needed``."""
    return not needed or needed <= set(model.capabilities)


def refusal(models: list[ModelInfo], needed: frozenset[str], wanted: str) -> InvalidArgument:
    """The 400 for a request naming ``wanted`` (resolved to ``models``) none of which serves it."""
    lacking = missing(models[0], needed)
    params = ", ".join(PARAMETERS.get(c, c) for c in lacking)
    names = ", ".join(m.id for m in models)
    return InvalidArgument(
        f"model '{wanted}' ({names}) does not support {params}: choose a model whose capabilities include "
        f"{', '.join(lacking)} (GET /v1/models lists them)",
        code="unsupported_parameter",
    )
