"""The router's data model of a model: what it costs, how much it reads, what it can do.

The catalog builds these and the provider adapters take them as the spec of the model they call; it
lives here, beside the catalog and outside ``providers/``, so that the adapters depend on the data model
and nothing on the catalog side depends on the adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.chat import Usage

MTOK = 1_000_000


@dataclass(frozen=True)
class ModelInfo:
    """One model of the catalog: what it costs, how much it reads, what it can do."""

    id: str  # "<provider>/<model>"
    provider: str
    owned_by: str
    context_length: int = 0
    capabilities: tuple[str, ...] = ()
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    aliases: tuple[str, ...] = ()
    max_output_tokens: int = 0  # 0: the provider's own default
    drop_params: tuple[str, ...] = ()  # sampling parameters this model refuses (reasoning models)
    default_params: Mapping[str, Any] = field(default_factory=dict)  # used when a request leaves them out

    @property
    def model(self) -> str:
        """The provider's own name of the model (the id without ``<provider>/``)."""
        return self.id.split("/", 1)[1]

    @property
    def paid(self) -> bool:
        """Whether a call costs money (a local or free model does not)."""
        return self.input_price_per_mtok > 0 or self.output_price_per_mtok > 0

    def cost_usd(self, usage: Usage) -> float:
        """What ``usage`` costs at this model's list prices (USD per million tokens)."""
        return (
            usage.prompt_tokens * self.input_price_per_mtok + usage.completion_tokens * self.output_price_per_mtok
        ) / MTOK
