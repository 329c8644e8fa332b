"""One background task per job (write batches, sync counters, reload a catalog), with the start/healthy/
stop shape of a store, so a service lists it among its stores and its readiness covers it.

The loop waits ``every_s`` (cut short by :meth:`BackgroundLoop.wake`), runs its step, and starts over.
A step that raises is logged and counted, and the loop carries on: one failed write or sync must not
end the task that retries it. ``stop()`` cancels the task and then runs ``final`` once, for the callers
that must flush what is still held in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


class BackgroundLoop:
    """Runs ``step`` over and over in one asyncio task named ``name`` until stopped.

    ``every_s`` is the pause before each step (0: none, for a step that itself waits, such as a queue
    read). ``failure_message`` is logged (with the traceback) when a step raises, and ``failures_metric``
    counted if given; ``failures`` keeps the count either way.
    """

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        every_s: float = 0.0,
        final: Step | None = None,
        failure_message: str = "",
        failures_metric: Counter | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.every_s = every_s
        self.final = final
        self.failure_message = failure_message or f"{name} failed; retrying"
        self.failures_metric = failures_metric
        self.log = logger or log
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the task (once: a second call while it runs does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def healthy(self) -> bool:
        """Whether the task is running."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Run the next step now rather than when the pause is over."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the task, then run ``final`` (a failure there is logged, not raised: we are stopping)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.final is not None:
            try:
                await self.final()
            except Exception:
                self.log.warning("%s: the last run before stopping failed", self.name, exc_info=True)

    async def _pause(self) -> None:
        if self.every_s > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the event
            # is set (a wake() just before stop()), and the task would then never end.
            try:
                async with asyncio.timeout(self.every_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()

    async def _run(self) -> None:
        while True:
            await self._pause()
            try:
                await self.step()
            except Exception:
                self.failures += 1
                if self.failures_metric is not None:
                    self.failures_metric.inc()
                self.log.warning(self.failure_message, exc_info=True)
