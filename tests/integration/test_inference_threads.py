"""Adaptive decoding threads on the real GGUF model (services/inference/engine/threads.py).

llama.cpp may change a context's thread count between decode calls. These tests change it while a
stream decodes, and check that the stream's text is the text of a run on fixed threads (greedy: the
thread count must not change what the model writes); then load the CPU with a bounded busy loop in a
subprocess and check that the real sampler steps down, and that the metric and the status say so.
No timing is asserted: the machine may be shared.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from prometheus_client import REGISTRY

from goblin.v1 import inference_pb2
from services.common.chat import SamplingParams
from services.inference.engine import ChatEngine
from services.inference.engine.threads import AdaptiveThreads, ThreadPolicy
from services.inference.models import chat_model_path
from services.inference.server import PrometheusObserver
from services.inference.service import InferenceService
from services.inference.servicer import InferenceServicer

MODEL = chat_model_path()
# Greedy decoding continues this list for hundreds of tokens: the stream lasts long enough to see changes.
COUNTING = "1, 2, 3, 4, 5,"
# Short: on a shared, oversubscribed machine two spinning threads can decode ten times slower than one.
LONG = SamplingParams(max_tokens=40, temperature=0)
# One core at 100 %, bounded in time even if the test dies before it kills the process.
BUSY_LOOP = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"


class Flipping:
    """A sampler that reports a busy machine and an idle one in turn: the thread count changes at
    every sample."""

    def __init__(self) -> None:
        self.busy = False

    def others(self) -> float:
        self.busy = not self.busy
        return 4.0 if self.busy else 0.0


class ThreadLog(PrometheusObserver):
    """The service's own observer (it sets the gauge), keeping each change as well."""

    def __init__(self) -> None:
        self.changes: list[int] = []

    def threads_changed(self, threads: int) -> None:
        super().threads_changed(threads)
        self.changes.append(threads)


def gauge() -> float | None:
    return REGISTRY.get_sample_value("goblin_inference_threads")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the bound is only there to fail instead of hanging on a slow machine."""
    for _ in range(1200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def reference_text() -> str:
    # One fixed thread: the reference the adaptive runs (one or two threads, changing) must match.
    engine = ChatEngine(MODEL, n_threads=1, adaptive_threads=False)
    await engine.start()
    try:
        assert engine.stats().threads == 1
        return (await engine.complete(COUNTING, LONG)).text
    finally:
        await engine.close()


async def test_a_stream_decodes_the_same_text_while_its_threads_change() -> None:
    expected = await reference_text()
    observer = ThreadLog()
    engine = ChatEngine(MODEL, n_threads=2, min_threads=1, observer=observer)
    await engine.start()
    try:
        worker = engine._worker
        assert worker is not None
        # Sample before every step, and let every quiet sample step back up: 2, 1, 2, 1, ...
        policy = ThreadPolicy(2, 1, up_after=1)
        worker._threads = AdaptiveThreads(policy, Flipping(), batch_threads=2, interval=0.0)  # type: ignore[arg-type]
        result = await engine.complete(COUNTING, LONG)
        await wait_until(lambda: len(observer.changes) > LONG.max_tokens, "the thread changes to reach the observer")
    finally:
        await engine.close()
    assert result.text == expected
    assert result.usage.completion_tokens == LONG.max_tokens
    assert observer.changes[0] == 2  # reported once at load
    assert set(observer.changes[1:]) == {1, 2}
    assert all(a != b for a, b in zip(observer.changes[1:], observer.changes[2:], strict=False))


async def test_a_busy_cpu_steps_decoding_down_and_the_gauge_and_status_follow() -> None:
    expected = await reference_text()
    observer = ThreadLog()
    engine = ChatEngine(MODEL, n_threads=2, min_threads=1, observer=observer)
    service = InferenceService(engine, lambda: None, "smollm2-135m-instruct")
    servicer = InferenceServicer(service)
    await engine.start()
    busy = None
    try:
        assert gauge() == 2  # everything this process may use, set when the model loads
        busy = await asyncio.create_subprocess_exec(sys.executable, "-c", BUSY_LOOP)
        texts: list[str] = []

        async def stream_until_stepped_down() -> None:
            # Streams decode, and the worker samples between their steps, until it has stepped down.
            while gauge() != 1:
                texts.append((await engine.complete(COUNTING, LONG)).text)

        await asyncio.wait_for(stream_until_stepped_down(), timeout=120)
        status = await servicer.GetStatus(inference_pb2.InferenceStatusRequest(), None)  # type: ignore[arg-type]
        assert status.n_threads == engine.stats().threads == 1
        texts.append((await engine.complete(COUNTING, LONG)).text)  # decoded on one thread
        assert all(text == expected for text in texts)
        assert 1 in observer.changes
    finally:
        if busy is not None:
            busy.kill()
            await asyncio.wait_for(busy.wait(), timeout=10)
        await engine.close()
