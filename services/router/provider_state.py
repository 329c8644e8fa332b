"""What the router knows about each provider's health: its circuit breaker, its recent latency, its
success and failure counts.

All of it lives in memory for the hot path and is written to ``provider_metrics`` by one background
task: at once (well, within a loop turn) when a circuit changes state, every few seconds otherwise. A
restarted router, or another replica starting, takes up the persisted circuit states and latencies.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.common.background import BackgroundLoop
from services.router.breaker import STATE_GAUGE, CircuitBreaker, CircuitState
from services.router.metrics import CIRCUIT_STATE

log = logging.getLogger(__name__)

LATENCY_WINDOW = 50
STATS_FLUSH_S = 5.0


@dataclass(frozen=True)
class ProviderSnapshot:
    provider: str
    circuit_state: str
    consecutive_failures: int
    opened_at: datetime | None
    p50_latency_ms: float | None
    success_delta: int
    failure_delta: int


class ProviderMetricsStore(Protocol):
    async def load_provider_metrics(self) -> list[Mapping[str, Any]]: ...
    async def save_provider_metrics(self, snapshots: list[ProviderSnapshot]) -> None: ...


class LatencyWindow:
    """The last ``size`` latencies; the median is computed when asked and remembered until the next."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self._p50: float | None = None

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self._p50 = None

    def p50(self) -> float | None:
        if self._p50 is None and self.samples:
            self._p50 = statistics.median(self.samples)
        return self._p50


class ProviderStates:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        probe_timeout_s: float = 120.0,
        store: ProviderMetricsStore | None = None,
        stats_flush_s: float = STATS_FLUSH_S,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self.store = store
        self.stats_flush_s = stats_flush_s
        self._breakers: dict[str, CircuitBreaker] = {}
        self._model_latency: dict[str, LatencyWindow] = {}
        self._provider_latency: dict[str, LatencyWindow] = {}
        self._restored_p50: dict[str, float] = {}
        self._successes: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._dirty: set[str] = set()
        # A circuit changing state wakes the writer at once; stopping writes what is still unwritten.
        self._writer = BackgroundLoop(
            "provider-metrics-writer", self.flush, every_s=stats_flush_s, final=self.flush, logger=log
        )

    # -- hot path ---------------------------------------------------------------------------------
    def breaker(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = self._breakers[provider] = CircuitBreaker(
                provider,
                failure_threshold=self.failure_threshold,
                cooldown_s=self.cooldown_s,
                probe_timeout_s=self.probe_timeout_s,
                on_change=self._state_changed,
            )
            CIRCUIT_STATE.labels(provider).set(STATE_GAUGE[breaker.state])
        return breaker

    def success(self, provider: str, model_id: str, latency_s: float) -> None:
        """A call answered; ``latency_s`` is the time to its first token (the whole answer if unary)."""
        self.breaker(provider).success()
        window = self._model_latency.get(model_id)
        if window is None:
            window = self._model_latency[model_id] = LatencyWindow()
        window.add(latency_s)
        window = self._provider_latency.get(provider)
        if window is None:
            window = self._provider_latency[provider] = LatencyWindow()
        window.add(latency_s)
        self._successes[provider] = self._successes.get(provider, 0) + 1
        self._dirty.add(provider)

    def success_without_latency(self, provider: str) -> None:
        """The provider is known to answer again (its health says so): close its circuit."""
        self.breaker(provider).success()

    def failure(self, provider: str) -> None:
        self.breaker(provider).failure()
        self._failures[provider] = self._failures.get(provider, 0) + 1
        self._dirty.add(provider)

    def latency_p50(self, model_id: str, provider: str) -> float | None:
        """Recent median latency of ``model_id``, else of its provider (as persisted), else None."""
        window = self._model_latency.get(model_id)
        p50 = window.p50() if window is not None else None
        if p50 is None:
            window = self._provider_latency.get(provider)
            p50 = window.p50() if window is not None else None
        return p50 if p50 is not None else self._restored_p50.get(provider)

    def provider_p50_ms(self, provider: str) -> float | None:
        window = self._provider_latency.get(provider)
        p50 = window.p50() if window is not None else None
        if p50 is None:
            p50 = self._restored_p50.get(provider)
        return None if p50 is None else p50 * 1000

    def _state_changed(self, breaker: CircuitBreaker) -> None:
        CIRCUIT_STATE.labels(breaker.provider).set(STATE_GAUGE[breaker.state])
        if breaker.state is CircuitState.open:
            log.warning(
                "circuit opened for %s after %d failures; next probe in %.0fs",
                breaker.provider,
                breaker.consecutive_failures,
                breaker.cooldown_s,
            )
        elif breaker.state is CircuitState.closed:
            log.info("circuit closed for %s", breaker.provider)
        self._dirty.add(breaker.provider)
        self._writer.wake()

    # -- persistence ------------------------------------------------------------------------------
    def snapshots(self) -> list[ProviderSnapshot]:
        """What changed since the last call, one row per provider."""
        rows = []
        for provider in sorted(self._dirty):
            breaker = self.breaker(provider)
            p50_ms = self.provider_p50_ms(provider)
            rows.append(
                ProviderSnapshot(
                    provider=provider,
                    circuit_state=str(breaker.state),
                    consecutive_failures=breaker.consecutive_failures,
                    opened_at=datetime.fromtimestamp(breaker.opened_at_wall, UTC) if breaker.opened_at_wall else None,
                    p50_latency_ms=p50_ms,
                    success_delta=self._successes.pop(provider, 0),
                    failure_delta=self._failures.pop(provider, 0),
                )
            )
        self._dirty.clear()
        return rows

    async def restore(self) -> None:
        if self.store is None:
            return
        now = time.time()
        for row in await self.store.load_provider_metrics():
            provider = row["provider"]
            opened_at = row.get("opened_at")
            self.breaker(provider).restore(
                row["circuit_state"],
                int(row["consecutive_failures"] or 0),
                now - opened_at.timestamp() if opened_at is not None else None,
            )
            CIRCUIT_STATE.labels(provider).set(STATE_GAUGE[self.breaker(provider).state])
            if row.get("p50_latency_ms") is not None:
                self._restored_p50[provider] = float(row["p50_latency_ms"]) / 1000

    async def flush(self) -> None:
        if self.store is None or not self._dirty:
            return
        rows = self.snapshots()
        try:
            await self.store.save_provider_metrics(rows)
        except Exception:
            log.exception("could not write provider_metrics for %s", [r.provider for r in rows])
            for row in rows:  # counted again next time rather than lost
                self._successes[row.provider] = self._successes.get(row.provider, 0) + row.success_delta
                self._failures[row.provider] = self._failures.get(row.provider, 0) + row.failure_delta
                self._dirty.add(row.provider)

    async def start(self) -> None:
        """Take up the persisted states, then write changes in the background."""
        await self.restore()
        await self._writer.start()

    async def healthy(self) -> bool:
        """Whether the background writer is running."""
        return await self._writer.healthy()

    async def stop(self) -> None:
        """Stop the writer and write what changed since its last turn."""
        await self._writer.stop()
