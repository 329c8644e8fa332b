"""What the engine reports about itself: per-request stats, load snapshots, and the observer hooks
the service layer turns into metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class RequestStats:
    """What one request cost, reported to the observer when it ends, however it ends."""

    outcome: FinishReason | Literal["error"]
    prompt_tokens: int
    completion_tokens: int
    queued_seconds: float
    time_to_first_token: float | None
    latency_seconds: float


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load."""

    loaded: bool
    queue_length: int
    queue_capacity: int
    active_sequences: int
    max_sequences: int
    threads: int = 0  # threads decoding now


class EngineObserver:
    """Hooks for metrics; the service layer subclasses it and overrides what it records.

    Every method is called on the event loop that started the engine, never on the model's thread.
    Times are in seconds and measured from when the request was submitted.
    """

    def model_loaded(self, loaded: bool) -> None:
        """The model finished loading (True) or was unloaded (False)."""

    def queue_changed(self, length: int, capacity: int) -> None:
        """The number of requests waiting for a place changed."""

    def first_token(self, seconds: float) -> None:
        """A request got its first generated token."""

    def request_finished(self, stats: RequestStats) -> None:
        """A request ended: finished, cancelled or failed."""

    def threads_changed(self, threads: int) -> None:
        """The number of threads decoding changed (and once when the model is loaded)."""
