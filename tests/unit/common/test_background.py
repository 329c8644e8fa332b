"""The one background-task loop: pause, step, survive failures, stop with a final run."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.common.background import BackgroundLoop


async def wait_until(condition, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_runs_the_step_every_interval_until_stopped() -> None:
    runs: list[float] = []

    async def step() -> None:
        runs.append(asyncio.get_running_loop().time())

    loop = BackgroundLoop("ticker", step, every_s=0.02)
    assert not await loop.healthy()
    await loop.start()
    assert await loop.healthy()
    await wait_until(lambda: len(runs) >= 3)
    await loop.stop()
    assert not await loop.healthy()
    stopped_at = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == stopped_at
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert min(gaps) >= 0.015  # the pause is kept between steps


async def test_start_twice_keeps_one_task() -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(3600)  # one step at a time: a second task would start a second step

    loop = BackgroundLoop("once", step)
    await loop.start()
    await loop.start()
    await wait_until(lambda: runs == 1)
    await asyncio.sleep(0.02)
    assert runs == 1
    await loop.stop()


async def test_a_failing_step_is_logged_and_counted_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    metric = Counter("test_background_failures_total", "test", registry=CollectorRegistry())
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("store went away")

    loop = BackgroundLoop("flaky", step, every_s=0.01, failure_message="flaky step failed", failures_metric=metric)
    with caplog.at_level(logging.WARNING, logger="services.common.background"):
        await loop.start()
        await wait_until(lambda: calls >= 4)
        assert await loop.healthy()
        await loop.stop()
    assert loop.failures == 2
    assert metric._value.get() == 2
    failures = [r for r in caplog.records if r.getMessage() == "flaky step failed"]
    assert len(failures) == 2 and failures[0].exc_info is not None


async def test_wake_runs_the_step_before_the_pause_is_over() -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1

    loop = BackgroundLoop("sleepy", step, every_s=3600)
    await loop.start()
    await asyncio.sleep(0.02)
    assert runs == 0
    loop.wake()
    await wait_until(lambda: runs == 1)
    await loop.stop()


async def test_stop_cancels_a_step_under_way_then_runs_final_once() -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("step cancelled")
            raise

    async def final() -> None:
        events.append("final")

    loop = BackgroundLoop("flusher", step, final=final)
    await loop.start()
    await started.wait()
    await loop.stop()
    assert events == ["step cancelled", "final"]
    await loop.stop()  # stopping again runs the final flush again, harmlessly, and does not raise
    assert events == ["step cancelled", "final", "final"]


async def test_a_failing_final_run_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def step() -> None:
        await asyncio.sleep(3600)

    async def final() -> None:
        raise ConnectionError("redis gone")

    loop = BackgroundLoop("last-push", step, final=final)
    await loop.start()
    with caplog.at_level(logging.WARNING, logger="services.common.background"):
        await loop.stop()
    assert any("last-push" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_stop_right_after_wake_still_ends_the_task() -> None:
    """The cancel lands while the wake-up is being delivered: it must not be swallowed."""

    async def step() -> None:
        return None

    loop = BackgroundLoop("woken", step, every_s=3600)
    await loop.start()
    await asyncio.sleep(0.01)  # the task is now waiting on its pause
    loop.wake()
    await asyncio.wait_for(loop.stop(), timeout=2)
    assert not await loop.healthy()
