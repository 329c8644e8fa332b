"""The circuit breaker's states and the routing policies' orders."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.router.breaker import CircuitBreaker
from services.router.models import ModelInfo
from services.router.policy import Candidate, order


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, changes: list[str] | None = None) -> CircuitBreaker:
    def record(b: CircuitBreaker) -> None:
        if changes is not None:
            changes.append(str(b.state))

    return CircuitBreaker("p", failure_threshold=3, cooldown_s=30, probe_timeout_s=60, clock=clock, on_change=record)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    b.success()  # a success in between resets the count
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    assert b.retry_after() == 30


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock, changes = Clock(), []
    b = breaker(clock, changes)
    for _ in range(3):
        b.failure()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow(), "the cooldown is over: one probe"
    assert b.state == "half_open"
    assert not b.allow(), "only one probe at a time"
    b.success()
    assert b.state == "closed" and b.consecutive_failures == 0 and b.allow()
    assert [c for c in changes if c != "closed"][-2:] == ["open", "half_open"]
    assert changes[-1] == "closed"


def test_a_failed_probe_opens_again_for_a_full_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 31
    assert b.allow()
    b.failure()
    assert b.state == "open" and b.retry_after() == 30


def test_a_released_or_abandoned_probe_lets_another_caller_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 31
    assert b.allow()
    b.release()
    assert b.allow()
    clock.now += 61  # the probe's caller vanished without a word
    assert b.allow()


def test_restore_takes_up_a_persisted_open_circuit_on_its_own_schedule() -> None:
    clock = Clock()
    b = breaker(clock)
    b.restore("open", 5, opened_at_wall=5000.0, now_wall=5010.0)
    assert b.state == "open" and not b.allow() and b.retry_after() == pytest.approx(20)
    assert b.open_until_wall == pytest.approx(5030.0)
    held = breaker(clock)  # a Retry-After made this opening longer than the cooldown: kept
    held.restore("open", 1, opened_at_wall=5000.0, open_until_wall=5300.0, now_wall=5100.0)
    assert held.state == "open" and held.retry_after() == pytest.approx(200)


def test_a_restored_circuit_whose_time_is_up_starts_closed_with_nothing_counted() -> None:
    """Not half-open: a half-open circuit lets one probe through and refuses everyone else until it
    answers, and one failure would open it again for a whole cooldown."""
    clock = Clock()
    b = breaker(clock)
    b.restore("open", 5, opened_at_wall=5000.0, now_wall=5000.0 + 3600)
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.allow() and b.allow() and b.allow(), "every caller, not one probe"
    b.failure()
    assert b.state == "closed", "one failure after a fresh start is one failure"
    stale = breaker(clock)
    stale.restore("half_open", 3, opened_at_wall=5000.0, open_until_wall=5030.0, now_wall=6000.0)
    assert stale.state == "closed" and stale.allow() and stale.allow()


def test_a_success_from_a_call_let_through_before_the_opening_does_not_close_it() -> None:
    clock = Clock()
    b = breaker(clock)
    b.hold(90)  # a 429 asked for 90 s while another call was still out
    b.success()  # that call answers now
    assert b.state == "open" and b.retry_after() == pytest.approx(90)
    b.close()  # the provider is known to answer (its health): closed at once
    assert b.state == "closed" and b.allow()


def test_hold_opens_at_once_for_at_least_what_the_provider_asked() -> None:
    clock = Clock()
    b = breaker(clock)
    b.hold(90)
    assert b.state == "open" and not b.allow() and b.retry_after() == pytest.approx(90) and b.held
    b.hold(10)  # a shorter ask does not shorten the wait already promised
    assert b.retry_after() == pytest.approx(90)
    clock.now += 90
    assert b.allow() and b.state == "half_open"
    b.success()
    b.failure()
    b.failure()
    b.failure()
    assert b.retry_after() == pytest.approx(30), "the next opening has the usual cooldown"
    assert not b.held
    short = breaker(clock)
    short.hold(5)  # shorter than the cooldown: still what the provider asked, and only that long
    assert short.held and short.retry_after() == pytest.approx(5)


def model(model_id: str, inp: float, out: float) -> ModelInfo:
    return ModelInfo(
        id=model_id,
        provider=model_id.split("/")[0],
        owned_by="x",
        input_price_per_mtok=inp,
        output_price_per_mtok=out,
    )


A = Candidate(model("a/x", 3.0, 15.0), priority=20, weight=1)
B = Candidate(model("b/x", 0.15, 0.60), priority=10, weight=3)
C = Candidate(model("c/x", 0.10, 4.00), priority=30, weight=0)


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.model.id for c in candidates]


def test_explicit_and_priority() -> None:
    assert ids(order("explicit", [A, B, C])) == ["a/x", "b/x", "c/x"]
    assert ids(order("priority", [A, B, C])) == ["b/x", "a/x", "c/x"]


def test_cheapest_depends_on_the_request_shape() -> None:
    # Long prompt, short answer: input price dominates (c is cheapest per input token).
    assert ids(order("cheapest", [A, B, C], prompt_tokens=10_000, max_tokens=1)) == ["c/x", "b/x", "a/x"]
    # Short prompt, long answer: output price dominates.
    assert ids(order("cheapest", [A, B, C], prompt_tokens=10, max_tokens=4000)) == ["b/x", "c/x", "a/x"]


def test_fastest_tries_unmeasured_models_first() -> None:
    latency = {"a/x": 0.3, "b/x": 0.1}
    assert ids(order("fastest", [A, B, C], latency=lambda m: latency.get(m.id))) == ["c/x", "b/x", "a/x"]


def test_weighted_leads_in_proportion_to_weight_and_never_with_weight_zero() -> None:
    rng = random.Random(7)
    leads = Counter(ids(order("weighted", [A, B, C], rng=rng))[0] for _ in range(4000))
    assert leads["c/x"] == 0
    assert leads["b/x"] / leads["a/x"] == pytest.approx(3, rel=0.15)
    assert ids(order("weighted", [A, B, C], rng=rng))[-1] == "c/x"


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError):
        order("random", [A, B])
