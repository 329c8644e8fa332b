"""What the router knows about each provider's health: its circuit breakers, its recent latency, its
success and failure counts.

Circuits are kept per model deployment (provider + model, as LiteLLM's cooldowns are): a model that
fails, or that its provider rate-limits, is skipped while the provider's other models keep serving.
Each provider also has one provider-wide circuit, for the faults that reach no model at all: the
connection cannot be made (refused, unreachable, DNS, a connect timeout) or TLS fails
(``ProviderError.provider_wide``), and every failure of the local inference service (one process
serving its models: when it is away, all of them are). Anything the provider answered, or stopped
answering, after it was sent a request names a model, and counts against that model's circuit only.

All of it lives in memory for the hot path and is written by one background task: at once (well,
within a loop turn) when a circuit changes state, every few seconds otherwise: the provider-wide
circuit, latency and counts to the provider's ``provider_metrics`` row (model ``''``), each
deployment's circuit to a row of its own (model ``<provider>/<model>``). A restarted router, or another
replica starting, takes up the persisted circuits, each on its own wall-clock schedule (opened at + its
cooldown), and latencies.
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
from services.router.breaker import PROVIDER_WIDE, STATE_GAUGE, CircuitBreaker, CircuitState
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
    open_until: datetime | None = None


@dataclass(frozen=True)
class DeploymentSnapshot:
    """One model deployment's circuit, as its ``provider_metrics`` row keeps it."""

    provider: str
    model: str  # the catalog's model id, "<provider>/<model>"
    circuit_state: str
    consecutive_failures: int
    opened_at: datetime | None
    open_until: datetime | None


class ProviderMetricsStore(Protocol):
    async def load_provider_metrics(self) -> list[Mapping[str, Any]]: ...
    async def save_provider_metrics(self, snapshots: list[ProviderSnapshot]) -> None: ...
    async def load_deployment_circuits(self) -> list[Mapping[str, Any]]: ...
    async def save_deployment_circuits(self, snapshots: list[DeploymentSnapshot]) -> None: ...


def _when(wall: float | None) -> datetime | None:
    return datetime.fromtimestamp(wall, UTC) if wall is not None else None


def _wall(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


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
        # (provider, model id); model PROVIDER_WIDE is the provider's own circuit. Model ids come from
        # the catalog (a request naming an unknown model is refused before any call), so this is bounded.
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._model_latency: dict[str, LatencyWindow] = {}
        self._provider_latency: dict[str, LatencyWindow] = {}
        self._restored_p50: dict[str, float] = {}
        self._successes: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._dirty_deployments: set[tuple[str, str]] = set()
        self._logged: dict[tuple[str, str], CircuitState] = {}  # the state last logged, per circuit
        # A circuit changing state wakes the writer at once; stopping writes what is still unwritten.
        self._writer = BackgroundLoop(
            "provider-metrics-writer", self.flush, every_s=stats_flush_s, final=self.flush, logger=log
        )

    # -- hot path ---------------------------------------------------------------------------------
    def breaker(self, provider: str, model_id: str = PROVIDER_WIDE) -> CircuitBreaker:
        """The circuit of deployment ``model_id`` at ``provider``, or (no model) the provider-wide one."""
        key = (provider, model_id)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(
                provider,
                model=model_id,
                failure_threshold=self.failure_threshold,
                cooldown_s=self.cooldown_s,
                probe_timeout_s=self.probe_timeout_s,
                on_change=self._state_changed,
            )
            self._gauge(breaker)
        return breaker

    def deployments(self, provider: str) -> list[CircuitBreaker]:
        """The deployment circuits of ``provider`` that have seen a call (or were restored)."""
        return [b for (p, m), b in self._breakers.items() if p == provider and m != PROVIDER_WIDE]

    def blocking(self, provider: str, model_id: str) -> CircuitBreaker | None:
        """The circuit that refuses a call to ``model_id`` now (the provider's, else the model's), or
        None: the call may go, and a half-open circuit has reserved it as its probe."""
        wide = self.breaker(provider)
        if not wide.allow():
            return wide
        deployment = self.breaker(provider, model_id)
        if not deployment.allow():
            wide.release()  # a provider-wide probe it may have reserved goes to the next caller
            return deployment
        return None

    def closed(self, provider: str, model_id: str) -> bool:
        """Both circuits a call to ``model_id`` passes are closed (worth asking again at once)."""
        return (
            self.breaker(provider).state is CircuitState.closed
            and self.breaker(provider, model_id).state is CircuitState.closed
        )

    def release(self, provider: str, model_id: str) -> None:
        """The call said nothing about the provider (cancelled, the caller's own error)."""
        self.breaker(provider).release()
        self.breaker(provider, model_id).release()

    def success(self, provider: str, model_id: str, latency_s: float) -> None:
        """A call answered; ``latency_s`` is the time to its first token (the whole answer if unary)."""
        self.breaker(provider).success()
        self.breaker(provider, model_id).success()
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
        """The provider is known to answer again (its health says so): close its circuits."""
        self.breaker(provider).close()
        for deployment in self.deployments(provider):
            deployment.close()

    def failure(self, provider: str, model_id: str = PROVIDER_WIDE, *, hold_s: float | None = None) -> None:
        """A call failed in a way that counts against a circuit: deployment ``model_id``'s, or with no
        model the provider-wide one. ``hold_s``: the provider asked us to stay away that long
        (Retry-After): the circuit opens at once for at least that long."""
        target = self.breaker(provider, model_id)
        if model_id != PROVIDER_WIDE:
            # The provider was reached (it answered, or timed out, after the request was sent): its
            # connections work, whatever this model's trouble.
            self.breaker(provider).success()
        if hold_s is not None:
            target.hold(hold_s)
        else:
            target.failure()
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

    def worst(self, provider: str) -> CircuitBreaker:
        """The provider's circuit furthest from closed (the provider-wide one on a tie), for the views
        that show one state per provider."""
        circuits = [self.breaker(provider), *self.deployments(provider)]
        return max(circuits, key=lambda b: (STATE_GAUGE[b.state], b.consecutive_failures))

    @staticmethod
    def _gauge(breaker: CircuitBreaker) -> None:
        CIRCUIT_STATE.labels(breaker.provider, breaker.model or "*").set(STATE_GAUGE[breaker.state])

    def _state_changed(self, breaker: CircuitBreaker) -> None:
        self._gauge(breaker)
        key = (breaker.provider, breaker.model)
        if self._logged.get(key, CircuitState.closed) is breaker.state:
            pass  # a count changed, not the state (a late failure of a call let through before it opened)
        elif breaker.state is CircuitState.open:
            log.warning(
                "circuit opened for %s after %d failures; next probe in %.0fs",
                breaker.name,
                breaker.consecutive_failures,
                breaker.open_for,
            )
        elif breaker.state is CircuitState.closed:
            log.info("circuit closed for %s", breaker.name)
        self._logged[key] = breaker.state
        if breaker.model == PROVIDER_WIDE:
            self._dirty.add(breaker.provider)
        else:
            self._dirty_deployments.add((breaker.provider, breaker.model))
        self._writer.wake()

    # -- persistence ------------------------------------------------------------------------------
    def snapshots(self) -> list[ProviderSnapshot]:
        """What changed since the last call, one row per provider (its provider-wide circuit)."""
        rows = []
        for provider in sorted(self._dirty):
            breaker = self.breaker(provider)
            rows.append(
                ProviderSnapshot(
                    provider=provider,
                    circuit_state=str(breaker.state),
                    consecutive_failures=breaker.consecutive_failures,
                    opened_at=_when(breaker.opened_at_wall),
                    p50_latency_ms=self.provider_p50_ms(provider),
                    success_delta=self._successes.pop(provider, 0),
                    failure_delta=self._failures.pop(provider, 0),
                    open_until=_when(breaker.open_until_wall),
                )
            )
        self._dirty.clear()
        return rows

    def deployment_snapshots(self) -> list[DeploymentSnapshot]:
        """The deployment circuits that changed since the last call."""
        rows = []
        for provider, model_id in sorted(self._dirty_deployments):
            breaker = self.breaker(provider, model_id)
            rows.append(
                DeploymentSnapshot(
                    provider=provider,
                    model=model_id,
                    circuit_state=str(breaker.state),
                    consecutive_failures=breaker.consecutive_failures,
                    opened_at=_when(breaker.opened_at_wall),
                    open_until=_when(breaker.open_until_wall),
                )
            )
        self._dirty_deployments.clear()
        return rows

    async def restore(self) -> None:
        if self.store is None:
            return
        now = time.time()
        for row in await self.store.load_provider_metrics():
            provider = row["provider"]
            self._restore_circuit(self.breaker(provider), row, now)
            if row.get("p50_latency_ms") is not None:
                self._restored_p50[provider] = float(row["p50_latency_ms"]) / 1000
        for row in await self.store.load_deployment_circuits():
            self._restore_circuit(self.breaker(row["provider"], row["model"]), row, now)

    def _restore_circuit(self, breaker: CircuitBreaker, row: Mapping[str, Any], now: float) -> None:
        """One persisted circuit (a provider's own row or a model deployment's) taken up on its schedule."""
        breaker.restore(
            row["circuit_state"],
            int(row["consecutive_failures"] or 0),
            _wall(row.get("opened_at")),
            _wall(row.get("open_until")),
            now,
        )
        self._gauge(breaker)

    async def flush(self) -> None:
        if self.store is None or not (self._dirty or self._dirty_deployments):
            return
        rows = self.snapshots()
        deployments = self.deployment_snapshots()
        try:
            if rows:
                await self.store.save_provider_metrics(rows)
        except Exception:
            log.exception("could not write provider_metrics for %s", [r.provider for r in rows])
            for row in rows:  # counted again next time rather than lost
                self._successes[row.provider] = self._successes.get(row.provider, 0) + row.success_delta
                self._failures[row.provider] = self._failures.get(row.provider, 0) + row.failure_delta
                self._dirty.add(row.provider)
        try:
            if deployments:
                await self.store.save_deployment_circuits(deployments)
        except Exception:
            log.exception("could not write the circuits of %s", [d.model for d in deployments])
            self._dirty_deployments.update((d.provider, d.model) for d in deployments)

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
