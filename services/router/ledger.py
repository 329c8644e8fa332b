"""The books: every routing decision as a row of ``routing_requests`` (see common/batch.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from services.common.batch import BatchWriter
from services.common.journal import Journal
from services.common.stores import PostgresStore


@dataclass
class RoutingRecord:
    requested_model: str
    outcome: str  # ok | error | cancelled
    provider: str = ""
    model: str = ""
    correlation_id: str = ""
    tenant_id: str = ""
    user_hash: str = ""
    api_key_id: str = ""
    policy: str = ""
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    error_code: str = ""
    fallback_chain: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def row(self) -> tuple:
        return (
            self.id,
            self.correlation_id or None,
            self.tenant_id or None,
            self.user_hash or None,
            self.api_key_id or None,
            self.requested_model,
            self.provider or None,
            self.model or None,
            self.policy or None,
            self.stream,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost_usd,
            self.latency_ms,
            self.ttft_ms,
            self.outcome,
            self.error_code or None,
            self.fallback_chain,
        )


INSERT = """INSERT INTO routing_requests (id, correlation_id, tenant_id, user_hash, api_key_id,
    requested_model, provider, model, policy, stream, prompt_tokens, completion_tokens, cost_usd, latency_ms,
    ttft_ms, outcome, error_code, fallback_chain)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    ON CONFLICT (id) DO NOTHING"""


class RoutingLedger(BatchWriter):
    """Every routing decision as a row of ``routing_requests``, written in batches. With a ``journal``
    (the router always has one) the row is appended locally before the request is answered, so no
    answered request is missing from the books after a SIGKILL or while Postgres is away."""

    def __init__(self, store: PostgresStore, *, journal: Journal | None = None) -> None:
        super().__init__(store, "routing_requests", INSERT, journal=journal)

    def record(self, record: RoutingRecord) -> None:
        self.add(record.row())
