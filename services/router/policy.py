"""Routing policies: the order in which candidate models are tried.

- ``explicit``: the order given (the requested model, then the request's fallbacks);
- ``priority``: by provider priority (lower first), then the order given;
- ``cheapest``: by what this request would cost at each model's prices (prompt estimated from its
  text, completion from ``max_tokens`` or the model's usual answer length);
- ``fastest``: by recent median latency to the first token; models never measured go first, so they
  get measured;
- ``weighted``: a random order where each model leads with probability proportional to its weight
  (Efraimidis-Spirakis sampling without replacement).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common.chat import Usage
from services.router.models import ModelInfo

STRATEGIES = ("explicit", "priority", "cheapest", "fastest", "weighted")
# Completion length assumed by `cheapest` when the request sets no max_tokens.
TYPICAL_COMPLETION_TOKENS = 256


@dataclass(frozen=True)
class Candidate:
    model: ModelInfo
    priority: int = 100
    weight: float = 1.0


def order(
    strategy: str,
    candidates: Sequence[Candidate],
    *,
    prompt_tokens: int = 0,
    max_tokens: int | None = None,
    latency: Callable[[ModelInfo], float | None] | None = None,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """``candidates`` in the order ``strategy`` tries them (a stable sort: ties keep the given order)."""
    items = list(candidates)
    if strategy == "explicit" or len(items) < 2:
        return items
    if strategy == "priority":
        return sorted(items, key=lambda c: c.priority)
    if strategy == "cheapest":
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=max_tokens or TYPICAL_COMPLETION_TOKENS)
        return sorted(items, key=lambda c: c.model.cost_usd(usage))
    if strategy == "fastest":
        measure = latency or (lambda _: None)
        return sorted(items, key=lambda c: measure(c.model) or 0.0)
    if strategy == "weighted":
        draw = (rng or random).random

        def key(c: Candidate) -> float:
            if c.weight <= 0:
                return math.inf
            return -math.log(1.0 - draw()) / c.weight  # exponential with rate = weight: smaller leads

        keyed = [(key(c), i, c) for i, c in enumerate(items)]
        return [c for _, _, c in sorted(keyed)]
    raise ValueError(f"unknown strategy {strategy!r}")
