"""Admission: how many requests may wait and run, the retry-after estimate for the one refused, and
whether a prompt fits the context window at all.

Shared by the event loop (which reserves a waiting place on submission) and the worker thread (which
turns it into a running sequence), under one lock.
"""

from __future__ import annotations

import math
import threading

from services.common.errors import InvalidArgument, ResourceExhausted

# Until the first step has been timed, the retry-after estimate assumes this much per step.
_INITIAL_STEP_SECONDS = 0.05
# Weight of the newest step in the moving average of step time.
_STEP_SMOOTHING = 0.2


class QueueFull(ResourceExhausted):
    """Every place in the waiting queue is taken; ``retry_after`` estimates, in seconds, when one frees."""

    code = "inference_queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class Admission:
    """Counts of waiting and running requests, shared by the event loop and the worker under one lock.

    A request holds a waiting place from submission until it gets a sequence (or is rejected or
    cancelled first), so the queue limit also covers requests the worker has not looked at yet.
    """

    def __init__(self, *, capacity: int, max_sequences: int) -> None:
        self.capacity = capacity
        self.max_sequences = max_sequences
        self._lock = threading.Lock()
        self._waiting = 0
        self._active = 0
        self._step_seconds = _INITIAL_STEP_SECONDS
        self._steps_to_free_place = 1

    def reserve(self) -> None:
        """Take a waiting place, or raise :class:`QueueFull`."""
        with self._lock:
            if self._waiting >= self.capacity:
                retry_after = self._retry_after()
                raise QueueFull(
                    f"the local model's queue is full ({self._waiting} requests waiting); "
                    f"retry in about {retry_after:.0f} s",
                    retry_after=retry_after,
                )
            self._waiting += 1

    def release_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1

    def admit(self) -> None:
        with self._lock:
            self._waiting -= 1
            self._active += 1

    def release_active(self) -> None:
        with self._lock:
            self._active -= 1

    def record_step(self, seconds: float, steps_to_free_place: int) -> None:
        """Feed the retry-after estimate: how long a step took, and how many steps at most until a running
        sequence ends (its remaining token budget; it may end sooner)."""
        with self._lock:
            self._step_seconds += _STEP_SMOOTHING * (seconds - self._step_seconds)
            self._steps_to_free_place = max(1, steps_to_free_place)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self._waiting, self._active

    def _retry_after(self) -> float:
        # A waiting place frees when the oldest waiting request gets a sequence, that is when the running
        # sequence closest to its token budget ends. Whole seconds, as HTTP Retry-After has them.
        steps = self._steps_to_free_place if self._active >= self.max_sequences else 1
        return float(max(1, math.ceil(steps * self._step_seconds)))


def fit_to_context(prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> int:
    """The output budget of a prompt of ``prompt_tokens`` tokens, or InvalidArgument if it cannot fit."""
    if prompt_tokens == 0:
        raise InvalidArgument("the prompt is empty")
    if prompt_tokens >= n_ctx:
        raise InvalidArgument(
            f"the prompt is {prompt_tokens} tokens: no room left in the context window of {n_ctx} tokens"
        )
    if max_tokens is None:
        return n_ctx - prompt_tokens
    if prompt_tokens + max_tokens > n_ctx:
        raise InvalidArgument(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the context window "
            f"of {n_ctx} tokens"
        )
    return max_tokens
