"""The books: every routing decision as a row of ``routing_requests``.

Rows are queued and written in batches by one background task, so a request never waits for the
insert. The queue is bounded: if Postgres falls far behind, rows are dropped and counted rather than
letting memory grow; on shutdown everything queued is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from services.common.stores import PostgresStore
from services.router.metrics import LEDGER_DROPPED

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.2
BATCH_SIZE = 200
QUEUE_LIMIT = 10_000


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
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"""


class RoutingLedger:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[RoutingRecord] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None

    def record(self, record: RoutingRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            LEDGER_DROPPED.inc()
            log.error("routing ledger full; dropped a record", extra={"routing_id": record.id})

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="routing-ledger")

    async def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        batch: list[RoutingRecord] = []
        while not self._queue.empty() and len(batch) < BATCH_SIZE:
            batch.append(self._queue.get_nowait())
        if batch:
            await self._write(batch)
            if not self._queue.empty():
                await self.flush()

    async def _write(self, batch: list[RoutingRecord]) -> None:
        try:
            await self.store.pool.executemany(INSERT, [r.row() for r in batch])
        except Exception:
            LEDGER_DROPPED.inc(len(batch))
            log.exception("could not write %d routing records", len(batch))

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await asyncio.sleep(FLUSH_INTERVAL_S)
            batch = [first]
            while not self._queue.empty() and len(batch) < BATCH_SIZE:
                batch.append(self._queue.get_nowait())
            await self._write(batch)
