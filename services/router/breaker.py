"""A circuit breaker: one per model deployment (provider + model), and one per provider for the faults
that reach no model at all (see :mod:`services.router.provider_state`).

``closed``: calls flow; consecutive failures are counted. At ``failure_threshold`` it opens.
``open``: calls are refused (the router moves to the next candidate) until its cooldown has passed:
``cooldown_s``, or longer when the provider said how long to stay away (:meth:`hold`, a 429's
Retry-After). ``half_open``: one probe call is let through; success closes the circuit, failure opens
it again for another cooldown. A probe that never reports (its caller vanished) is given up after
``probe_timeout_s``.
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
# The model of a provider-wide circuit, in the metric and in log lines.
PROVIDER_WIDE = ""


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        *,
        model: str = PROVIDER_WIDE,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        probe_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.provider = provider
        self.model = model  # the catalog's model id; PROVIDER_WIDE for the provider's own circuit
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self.clock = clock
        self.on_change = on_change
        self.state = CircuitState.closed
        self.consecutive_failures = 0
        self.opened_at: float | None = None  # clock() time
        self.opened_at_wall: float | None = None  # time.time(), for the books and a restart
        self.open_for = cooldown_s  # this opening's cooldown: cooldown_s, or what the provider asked
        self.held = False  # this opening is the provider's ask (Retry-After), not a count of failures
        self._probe_started: float | None = None

    @property
    def name(self) -> str:
        """What a refusal or a log line calls this circuit: the model, or the provider."""
        return self.model or self.provider

    @property
    def open_until_wall(self) -> float | None:
        """When (time.time()) a call is let through again; None while closed."""
        return None if self.opened_at_wall is None else self.opened_at_wall + self.open_for

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, True for exactly one caller (the probe),
        who must then report :meth:`success`, :meth:`failure` or :meth:`release`."""
        if self.state is CircuitState.closed:
            return True
        now = self.clock()
        if self.state is CircuitState.open:
            if self.opened_at is not None and now - self.opened_at < self.open_for:
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
        return max(0.0, self.open_for - (self.clock() - self.opened_at))

    def success(self) -> None:
        """A call answered. While the circuit is open this is a call let through before it opened: the
        opening stands (above all one a provider asked for with Retry-After); the probe decides."""
        if self.state is CircuitState.open:
            return
        self.close()

    def close(self) -> None:
        """Closed, with nothing counted: a probe answered, or the provider is known to answer again."""
        self.consecutive_failures = 0
        self._probe_started = None
        if self.state is not CircuitState.closed:
            self.opened_at = self.opened_at_wall = None
            self.open_for = self.cooldown_s
            self.held = False
            self._set(CircuitState.closed)

    def failure(self) -> None:
        self.consecutive_failures += 1
        self._probe_started = None
        if self.state is CircuitState.half_open or (
            self.state is CircuitState.closed and self.consecutive_failures >= self.failure_threshold
        ):
            self._open(self.cooldown_s, held=False)
        elif self.on_change is not None:
            self.on_change(self)

    def hold(self, seconds: float) -> None:
        """A failure after which the provider said how long to stay away (Retry-After): open at once
        for at least ``seconds``, however few failures came before (LiteLLM's cooldown on a 429)."""
        self.consecutive_failures += 1
        self._probe_started = None
        if self.state is CircuitState.open and self.retry_after() >= seconds:
            if self.on_change is not None:
                self.on_change(self)
            return
        self._open(max(seconds, 0.0), held=True)

    def release(self) -> None:
        """The call ended without saying anything about the provider (the caller's own error, a
        cancellation): a half-open circuit lets the next caller probe."""
        self._probe_started = None

    def restore(
        self,
        state: str,
        consecutive_failures: int,
        opened_at_wall: float | None,
        open_until_wall: float | None = None,
        now_wall: float | None = None,
    ) -> None:
        """Take up a state persisted by an earlier run (or another replica). An open circuit keeps its
        own schedule in wall-clock time (opened at + its cooldown): one whose time is up starts closed
        with no failures counted, so a suite started long after its providers failed is not held back
        by what they did then."""
        now_wall = time.time() if now_wall is None else now_wall
        if state not in (CircuitState.open, CircuitState.half_open) or opened_at_wall is None:
            self.consecutive_failures = consecutive_failures
            return
        until = open_until_wall if open_until_wall is not None else opened_at_wall + self.cooldown_s
        if until <= now_wall:
            self.consecutive_failures = 0
            return
        self.consecutive_failures = consecutive_failures
        self.state = CircuitState.open
        self.open_for = until - opened_at_wall
        self.held = self.open_for > self.cooldown_s  # the provider asked for longer than our own cooldown
        self.opened_at = self.clock() - (now_wall - opened_at_wall)
        self.opened_at_wall = opened_at_wall

    def _open(self, seconds: float, *, held: bool) -> None:
        self.opened_at, self.opened_at_wall = self.clock(), time.time()
        self.open_for = seconds
        self.held = held
        self._set(CircuitState.open)

    def _set(self, state: CircuitState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(self)
