"""A circuit breaker per provider.

``closed``: calls flow; consecutive failures are counted. At ``failure_threshold`` it opens.
``open``: calls are refused (the router moves to the next candidate) until ``cooldown_s`` has passed.
``half_open``: one probe call is let through; success closes the circuit, failure opens it again for
another cooldown. A probe that never reports (its caller vanished) is given up after ``probe_timeout_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


# The value of goblin_router_circuit_state.
STATE_GAUGE = {CircuitState.closed: 0, CircuitState.half_open: 1, CircuitState.open: 2}


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        probe_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self.clock = clock
        self.on_change = on_change
        self.state = CircuitState.closed
        self.consecutive_failures = 0
        self.opened_at: float | None = None  # clock() time
        self.opened_at_wall: float | None = None  # time.time(), for the books
        self._probe_started: float | None = None

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, True for exactly one caller (the probe),
        who must then report :meth:`success`, :meth:`failure` or :meth:`release`."""
        if self.state is CircuitState.closed:
            return True
        now = self.clock()
        if self.state is CircuitState.open:
            if self.opened_at is not None and now - self.opened_at < self.cooldown_s:
                return False
            self._set(CircuitState.half_open)
        if self._probe_started is not None and now - self._probe_started < self.probe_timeout_s:
            return False
        self._probe_started = now
        return True

    def retry_after(self) -> float:
        """Seconds until a call may be let through again (0 when it may now)."""
        if self.state is not CircuitState.open or self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))

    def success(self) -> None:
        self.consecutive_failures = 0
        self._probe_started = None
        if self.state is not CircuitState.closed:
            self.opened_at = self.opened_at_wall = None
            self._set(CircuitState.closed)

    def failure(self) -> None:
        self.consecutive_failures += 1
        self._probe_started = None
        if self.state is CircuitState.half_open or (
            self.state is CircuitState.closed and self.consecutive_failures >= self.failure_threshold
        ):
            self.opened_at, self.opened_at_wall = self.clock(), time.time()
            self._set(CircuitState.open)
        elif self.on_change is not None:
            self.on_change(self)

    def release(self) -> None:
        """The call ended without saying anything about the provider (the caller's own error, a
        cancellation): a half-open circuit lets the next caller probe."""
        self._probe_started = None

    def restore(self, state: str, consecutive_failures: int, opened_ago_s: float | None) -> None:
        """Take up a state persisted by an earlier run (or another replica)."""
        self.consecutive_failures = consecutive_failures
        if state in (CircuitState.open, CircuitState.half_open) and opened_ago_s is not None:
            self.state = CircuitState.open
            self.opened_at = self.clock() - opened_ago_s
            self.opened_at_wall = time.time() - opened_ago_s

    def _set(self, state: CircuitState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(self)
