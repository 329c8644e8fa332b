"""The workers: claim queued tasks from Postgres, run them in the sandbox, record how they ended.

Each process has an owner id; a task it claims is leased to that id for ``lease_s`` and the lease is
renewed every ``lease_s / 3`` (the heartbeat, which also reads the task's cancel flag). A reaper, on
every replica, finds leases that expired (an executor that died or hung) and fails those tasks with the
reason, or requeues them when their goblin is idempotent and attempts remain. Workers wake on NOTIFY
(:mod:`.notifier`) and look on their own every ``poll_s`` in case one was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

import asyncpg

from services.common.secrets import SecretGuard
from services.common.telemetry import SpanKind, context_from, set_attributes, span
from services.executor import prefork, sandbox
from services.executor.config import ExecutorSettings
from services.executor.metrics import QUEUE_DEPTH, START_LATENCY, TASK_DURATION, TASKS
from services.executor.notifier import Notifier
from services.executor.output import OutputSink
from services.executor.repository import TaskRepository
from services.executor.runspec import RunSpecs

log = logging.getLogger(__name__)


def owner_id() -> str:
    """This process's lease owner: host and pid for the operator, random so a restart is a new owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def signal_name(number: int | None) -> str:
    if not number:
        return ""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class WorkerPool:
    """``concurrency`` workers, the heartbeat and the reaper, with the start/healthy/stop of a store."""

    def __init__(
        self,
        repository: TaskRepository,
        notifier: Notifier,
        specs: RunSpecs,
        guard: SecretGuard,
        settings: ExecutorSettings,
    ) -> None:
        self.repository = repository
        self.notifier = notifier
        self.specs = specs
        self.guard = guard
        self.settings = settings
        self.owner = owner_id()
        self.lease_s = settings.lease_s
        self._running: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        notifier.on_cancel = self._cancel_local

    async def start(self) -> None:
        # The zygote (prefork.py) is started now, not by the first task, which would wait for its
        # interpreter. One that cannot start is retried by each task, which then fails with the reason.
        with contextlib.suppress(OSError):
            prefork.current()
        loops = [self._worker(i) for i in range(self.settings.concurrency)]
        loops += [self._heartbeat(), self._reaper()]
        self._tasks = [asyncio.create_task(loop, name=f"executor-{i}") for i, loop in enumerate(loops)]

    async def healthy(self) -> bool:
        return all(not task.done() for task in self._tasks)

    async def stop(self) -> None:
        """Stop claiming, kill what runs, and hand its tasks back at once (failed with the reason, or
        requeued when idempotent) rather than leaving them to the reaper's lease expiry."""
        self._stopping = True
        for cancel in self._running.values():
            cancel.set()
        workers = self._tasks[: self.settings.concurrency]
        if workers:
            await asyncio.wait(workers, timeout=10.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.repository.release(self.owner)
        prefork.stop()

    def _cancel_local(self, task_id: str) -> None:
        cancel = self._running.get(task_id)
        if cancel is not None:
            cancel.set()

    async def _worker(self, index: int) -> None:
        work = self.notifier.work
        while not self._stopping:
            work.clear()
            try:
                row = await self.repository.claim(self.owner, self.lease_s)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("worker %d cannot claim: %s", index, exc)
                row = None
            if row is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_s):
                        await work.wait()
                continue
            # Another task may be queued right behind this one: let an idle worker look too.
            work.set()
            # The run is traced under the request that queued the task (its traceparent is in the row).
            attributes = {"goblin.task.id": row["id"], "goblin.task.goblin": row["goblin"] or "script"}
            with span(
                "executor task run", attributes, kind=SpanKind.CONSUMER, parent=context_from(row["trace_context"])
            ):
                await self._run(row)

    async def _run(self, row: asyncpg.Record) -> None:
        task_id = row["id"]
        cancel = asyncio.Event()
        if row["cancel_requested"]:
            cancel.set()
        self._running[task_id] = cancel
        started = time.monotonic()
        sink: OutputSink | None = None
        try:
            try:
                spec = self._spec(row)
            except Exception as exc:  # the catalog changed since it was queued: the goblin or its args
                await self._finish(row, _outcome("failed", error=f"cannot run: {exc}"), 0.0)
                return
            sink = OutputSink(
                self.repository,
                self.guard,
                task_id,
                tenant_id=row["tenant_id"] or "",
                user_hash=row["user_hash"] or "",
                tail_chars=spec.limits.max_output_bytes,
            )
            created = row["created_at"].timestamp()

            async def on_start(pid: int) -> None:
                START_LATENCY.observe(max(0.0, time.time() - created))

            with span("executor launcher", {"goblin.sandbox": spec.mode}) as launched:
                result = await sandbox.run(spec, on_output=sink.line, cancel=cancel, on_start=on_start)
                set_attributes(launched, {"goblin.task.status": result.status, "process.exit.code": result.exit_code})
            await sink.close()
            outcome = _outcome(
                result.status,
                exit_code=result.exit_code,
                signal=signal_name(result.signal),
                stdout=sink.tails["stdout"].text(),
                stderr=sink.tails["stderr"].text(),
                stdout_bytes=result.stdout_bytes,
                stderr_bytes=result.stderr_bytes,
                error=result.error,
            )
            if self._stopping and result.status == "cancelled":
                return  # stop() hands it back (release): not the requester's cancel
            await self._finish(row, outcome, result.duration_s)
        except Exception:
            log.exception("task %s: the executor failed while running it", task_id)
            with contextlib.suppress(Exception):
                if sink is not None:
                    await sink.close()
                await self._finish(
                    row, _outcome("failed", error="the executor failed while running it"), time.monotonic() - started
                )
        finally:
            self._running.pop(task_id, None)

    def _spec(self, row: asyncpg.Record) -> sandbox.RunSpec:
        if row["is_script"]:
            return self.specs.for_script(row["script"] or "", row["script_language"] or "", row["timeout_s"])
        return self.specs.for_goblin(row["goblin"], json.loads(row["args"] or "{}"), row["timeout_s"])

    async def _finish(self, row: asyncpg.Record, outcome: dict[str, Any], duration_s: float) -> None:
        audit = {
            "goblin": row["goblin"],
            "status": outcome["status"],
            "exit_code": outcome["exit_code"],
            "signal": outcome["signal"],
            "duration_s": round(duration_s, 3),
            "attempt": row["attempts"],
            "owner": self.owner,
        }
        if await self.repository.finish(row["id"], self.owner, outcome, audit):
            TASKS.labels(outcome["status"]).inc()
            TASK_DURATION.observe(duration_s)
        else:
            log.warning("task %s ended after its lease was lost (reaped); its result is dropped", row["id"])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            ids = list(self._running)
            if not ids:
                continue
            try:
                held = await self.repository.heartbeat(self.owner, ids, self.lease_s)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            for task_id in ids:
                if task_id not in held:
                    # Reaped (we were too slow to renew): another executor may run it; stop ours.
                    log.warning("task %s: lease lost; stopping it here", task_id)
                    self._cancel_local(task_id)
                elif held[task_id]:
                    self._cancel_local(task_id)

    async def _reaper(self) -> None:
        while True:
            try:
                for task_id, status in await self.repository.reap():
                    log.warning("task %s: its executor was lost; now %s", task_id, status)
                    if status != "queued":
                        TASKS.labels(status).inc()
                QUEUE_DEPTH.set(await self.repository.queue_depth())
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("reaper failed: %s", exc)
            await asyncio.sleep(max(0.5, min(self.lease_s / 3, 5.0)))


def _outcome(
    status: str,
    *,
    exit_code: int | None = None,
    signal: str = "",
    stdout: str = "",
    stderr: str = "",
    stdout_bytes: int = 0,
    stderr_bytes: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "exit_code": exit_code,
        "signal": signal or None,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_bytes": stdout_bytes,
        "stderr_bytes": stderr_bytes,
        "error": error,
    }
