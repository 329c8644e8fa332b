"""A running task's output: lines scanned for secrets (``worker_processing``) before they are stored or
streamed, appended to ``task_events`` in batches, and the bounded tails the task row keeps."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from services.common.secrets import SecretGuard, SecretsBlocked
from services.executor.repository import TaskRepository

log = logging.getLogger(__name__)

# Lines are written at most this long after they were printed, in batches of at most BATCH_LINES: a
# chatty task costs a write per batch, not per line, and a reader still sees output live.
FLUSH_DELAY_S = 0.05
BATCH_LINES = 500
# Writing what is left once the process ended: past this, Postgres is down and the lines are lost.
CLOSE_TIMEOUT_S = 30.0
WITHHELD = "[output withheld: it could not be scanned for secrets]"


class Tail:
    """The last ``max_chars`` characters of a stream, kept as whole lines where possible."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._lines: deque[str] = deque()
        self._size = 0

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        while self._size > self.max_chars and len(self._lines) > 1:
            self._size -= len(self._lines.popleft()) + 1

    def text(self) -> str:
        text = "\n".join(self._lines)
        return text[-self.max_chars :] if len(text) > self.max_chars else text


class OutputSink:
    """``line(stream, text)`` is the sandbox's ``on_output``; ``close()`` writes what is left."""

    def __init__(
        self,
        repository: TaskRepository,
        guard: SecretGuard,
        task_id: str,
        *,
        tenant_id: str,
        user_hash: str,
        tail_chars: int,
    ) -> None:
        self.repository = repository
        self.guard = guard
        self.task_id = task_id
        self.tenant_id = tenant_id
        self.user_hash = user_hash
        self.tails = {"stdout": Tail(tail_chars), "stderr": Tail(tail_chars)}
        self._pending: list[tuple[str, str]] = []
        self._unsent: list[tuple[str, str]] = []
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name=f"task-output-{task_id}")

    async def line(self, stream: str, text: str) -> None:
        """One line the task printed (without its newline), unscanned."""
        self._pending.append((stream, text))
        self._ready.set()
        if len(self._pending) >= BATCH_LINES:
            # Back-pressure: a task printing faster than Postgres takes its lines waits here.
            await self._flush()

    async def close(self) -> None:
        """Write every line still pending (call once the process has ended). The writer finishes its
        own write rather than being cancelled in it: a write cancelled after Postgres committed it
        would be written again."""
        self._closing = True
        self._ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._writer.cancel()
            log.error("task %s: %d output lines could not be written", self.task_id, len(self._unsent))

    async def _write_loop(self) -> None:
        while True:
            await self._ready.wait()
            if not self._closing:
                await asyncio.sleep(FLUSH_DELAY_S)
            try:
                await self._flush()
            except Exception:
                log.warning("task %s: writing output failed; retrying", self.task_id, exc_info=True)
                self._ready.set()
                await asyncio.sleep(1.0)
                continue
            if self._closing and not self._pending and not self._unsent:
                return

    async def _flush(self) -> None:
        # One flush at a time: the writer's and a back-pressured line()'s would write the same lines.
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        batch, self._pending = self._pending, []
        self._ready.clear()
        if batch:
            try:
                texts = await self.guard.check_async(
                    [text for _, text in batch], tenant_id=self.tenant_id, user_hash=self.user_hash
                )
            except SecretsBlocked:
                # Under the block policy, or past the scan budget: none of these lines leaves the executor.
                texts = [WITHHELD] * len(batch)
            for (stream, _), text in zip(batch, texts, strict=True):
                self.tails[stream].add(text)
                self._unsent.append((stream, text))
        if not self._unsent:
            return
        # Scanned lines wait here until Postgres has them: a failed write is retried, never rescanned.
        await self.repository.append_output(self.task_id, self._unsent)
        self._unsent = []
