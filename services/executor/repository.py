"""The executor's rows: tasks (the durable queue) and their events, in the schema ``executor``.

Every change of a task's status appends a ``status`` event and notifies :data:`CHANNEL` in the same
transaction, so a listener (a worker waiting for work, a stream waiting for events, the owner of a task
being cancelled) wakes as the change commits. Event numbers come from the task row's ``next_seq``,
bumped in the transaction that appends them: one sequence per task whoever writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.common.audit import write_event
from services.common.errors import ResourceExhausted
from services.common.stores import PostgresStore

CHANNEL = "goblin_executor"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
STATUSES = frozenset({"queued", "running"}) | FINAL_STATUSES


@dataclass(frozen=True)
class NewTask:
    """What a validated request stores: the task, and who asked (tenant and hashed user)."""

    id: str
    tenant_id: str
    user_hash: str
    goblin: str
    args: dict[str, Any]
    timeout_s: int
    max_attempts: int
    idempotency_key: str | None
    script: str | None = None
    script_language: str | None = None
    script_sha256: str | None = None
    dry_run: bool = False
    plan: dict[str, Any] | None = None
    correlation_id: str = ""
    trace_context: str = ""  # the submitting request's traceparent (services.common.telemetry)


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    data: str
    at_ms: int


def notify_sql(kind: str) -> str:
    """The statement that notifies ``kind:<task id>`` ($1 is the task id)."""
    return f"SELECT pg_notify('{CHANNEL}', '{kind}:' || $1::text)"


async def append_events(conn: asyncpg.Connection, task_id: str, events: Sequence[tuple[str, str]]) -> int:
    """Append ``(kind, data)`` events to the task in order, on ``conn`` (inside the caller's
    transaction); returns the last seq. Notifies streams."""
    if not events:
        return 0
    last = await conn.fetchval(
        "UPDATE tasks SET next_seq = next_seq + $2 WHERE id = $1 RETURNING next_seq", task_id, len(events)
    )
    first = last - len(events) + 1
    await conn.execute(
        """INSERT INTO task_events (task_id, seq, kind, data)
           SELECT $1, s, k, d FROM unnest($2::bigint[], $3::text[], $4::text[]) AS e(s, k, d)""",
        task_id,
        list(range(first, last + 1)),
        [kind for kind, _ in events],
        [data for _, data in events],
    )
    await conn.execute(notify_sql("event"), task_id)
    return last


class TaskRepository:
    """SQL of the queue: insert, read, claim, renew, finish, reap, cancel."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def insert(self, task: NewTask, *, max_active: int) -> tuple[asyncpg.Record, bool]:
        """Store ``task`` (queued, or finished when it is a dry run); returns the row and whether it is
        new. With an idempotency key already used by this requester, the earlier task is returned.
        Refuses (:class:`ResourceExhausted` ``task_queue_full``) when the tenant already has
        ``max_active`` tasks queued or running."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            if task.idempotency_key:
                existing = await self._by_idempotency_key(conn, task)
                if existing is not None:
                    return existing, False
            if not task.dry_run:
                # One submitter per tenant at a time between the count and the insert, so concurrent
                # requests cannot all pass the bound.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('goblin-executor-tenant:' || $1))", task.tenant_id
                )
                active = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE tenant_id = $1 AND status IN ('queued', 'running')",
                    task.tenant_id,
                )
                if active >= max_active:
                    raise ResourceExhausted(
                        f"this tenant already has {active} tasks queued or running (at most {max_active})",
                        code="task_queue_full",
                        retry_after=5,
                    )
            status = "succeeded" if task.dry_run else "queued"
            row = await conn.fetchrow(
                """INSERT INTO tasks (id, tenant_id, user_hash, goblin, is_script, args, status, dry_run, timeout_s,
                                      max_attempts, idempotency_key, script, script_language, script_sha256, plan,
                                      started_at, finished_at, trace_context)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb,
                           CASE WHEN $8 THEN now() END, CASE WHEN $8 THEN now() END, $16)
                   ON CONFLICT (tenant_id, user_hash, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                   RETURNING *""",
                task.id,
                task.tenant_id,
                task.user_hash,
                task.goblin,
                task.script is not None,
                json.dumps(task.args),
                status,
                task.dry_run,
                task.timeout_s,
                task.max_attempts,
                task.idempotency_key,
                task.script,
                task.script_language,
                task.script_sha256,
                json.dumps(task.plan) if task.plan is not None else None,
                task.trace_context,
            )
            if row is None:  # the same key committed by a concurrent request since we looked
                existing = await self._by_idempotency_key(conn, task)
                assert existing is not None
                return existing, False
            await append_events(conn, task.id, [("status", status)])
            if not task.dry_run:
                await conn.execute(notify_sql("queued"), task.id)
            await write_event(
                conn,
                "task_submitted",
                location="executor",
                tenant_id=task.tenant_id,
                user_hash=task.user_hash,
                correlation_id=task.correlation_id,
                details={
                    "task_id": task.id,
                    "goblin": task.goblin,
                    "script_sha256": task.script_sha256,
                    "dry_run": task.dry_run,
                },
            )
            return await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", task.id), True

    @staticmethod
    async def _by_idempotency_key(conn: asyncpg.Connection, task: NewTask) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM tasks WHERE tenant_id = $1 AND user_hash = $2 AND idempotency_key = $3",
            task.tenant_id,
            task.user_hash,
            task.idempotency_key,
        )

    async def get(self, task_id: str) -> asyncpg.Record | None:
        return await self.store.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)

    async def list(
        self, *, tenant_id: str | None, user_hash: str | None, status: str | None, limit: int
    ) -> list[asyncpg.Record]:
        """Newest first; ``None`` filters are not applied (an admin's view)."""
        return await self.store.pool.fetch(
            """SELECT * FROM tasks
                WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR user_hash = $2)
                  AND ($3::text IS NULL OR status = $3)
                ORDER BY created_at DESC, id LIMIT $4""",
            tenant_id,
            user_hash,
            status,
            limit,
        )

    async def cancel(self, task_id: str) -> asyncpg.Record:
        """A queued task is cancelled at once; a running one is flagged, and its owner (told by NOTIFY,
        or by its next heartbeat) kills it. A finished task is left as it is."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT status FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            if row is not None and row["status"] == "queued":
                await conn.execute(
                    "UPDATE tasks SET status = 'cancelled', finished_at = now(), error = 'cancelled before it started' "
                    "WHERE id = $1",
                    task_id,
                )
                await append_events(conn, task_id, [("status", "cancelled")])
            elif row is not None and row["status"] == "running":
                await conn.execute("UPDATE tasks SET cancel_requested = TRUE WHERE id = $1", task_id)
                await conn.execute(notify_sql("cancel"), task_id)
            return await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)

    async def claim(self, owner: str, lease_s: float) -> asyncpg.Record | None:
        """The oldest queued task, now running under ``owner``'s lease; None when there is none.
        SKIP LOCKED: replicas claiming at once each get a different task and never wait on each other."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """WITH next AS (
                       SELECT id FROM tasks WHERE status = 'queued' ORDER BY created_at, id
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
                   UPDATE tasks t SET status = 'running', lease_owner = $1,
                          lease_expires_at = now() + make_interval(secs => $2), heartbeat_at = now(),
                          started_at = now(), attempts = t.attempts + 1
                     FROM next WHERE t.id = next.id
                   RETURNING t.*""",
                owner,
                lease_s,
            )
            if row is not None:
                await append_events(conn, row["id"], [("status", "running")])
            return row

    async def heartbeat(self, owner: str, task_ids: list[str], lease_s: float) -> dict[str, bool]:
        """Renew ``owner``'s leases; returns, for each task still leased to it, whether a cancel was
        asked. A task missing from the answer is no longer this owner's (reaped)."""
        rows = await self.store.pool.fetch(
            """UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
                WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running'
                RETURNING id, cancel_requested""",
            owner,
            task_ids,
            lease_s,
        )
        return {r["id"]: r["cancel_requested"] for r in rows}

    async def append_output(self, task_id: str, events: Sequence[tuple[str, str]]) -> None:
        """Append a batch of (already redacted) output lines."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            await append_events(conn, task_id, events)

    async def finish(self, task_id: str, owner: str, outcome: dict[str, Any], audit: dict[str, Any]) -> bool:
        """Record the end of a task this owner ran; False when its lease was lost meanwhile (reaped)."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE tasks SET status = $3, exit_code = $4, signal = $5, stdout = $6, stderr = $7,
                          stdout_bytes = $8, stderr_bytes = $9, error = $10, finished_at = now(),
                          lease_owner = NULL, lease_expires_at = NULL
                    WHERE id = $1 AND lease_owner = $2 AND status = 'running'
                   RETURNING tenant_id, user_hash""",
                task_id,
                owner,
                outcome["status"],
                outcome["exit_code"],
                outcome["signal"],
                outcome["stdout"],
                outcome["stderr"],
                outcome["stdout_bytes"],
                outcome["stderr_bytes"],
                outcome["error"],
            )
            if row is None:
                return False
            await append_events(conn, task_id, [("status", outcome["status"])])
            await write_event(
                conn,
                "task_finished",
                location="executor",
                tenant_id=row["tenant_id"] or "",
                user_hash=row["user_hash"] or "",
                details={"task_id": task_id, **audit},
            )
            return True

    async def reap(self, limit: int = 100) -> list[tuple[str, str]]:
        """Running tasks whose lease expired (their executor died): requeued when attempts remain (an
        idempotent goblin), else failed with the reason. Returns (task id, new status)."""
        done: list[tuple[str, str]] = []
        async with self.store.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, attempts, max_attempts, lease_owner FROM tasks
                    WHERE status = 'running' AND lease_expires_at < now()
                    ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
            for row in rows:
                if row["attempts"] < row["max_attempts"]:
                    await conn.execute(
                        """UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                                  error = 'executor lost; requeued' WHERE id = $1""",
                        row["id"],
                    )
                    await append_events(conn, row["id"], [("status", "queued")])
                    await conn.execute(notify_sql("queued"), row["id"])
                    done.append((row["id"], "queued"))
                else:
                    await conn.execute(
                        """UPDATE tasks SET status = 'failed', finished_at = now(), lease_owner = NULL,
                                  lease_expires_at = NULL,
                                  error = 'executor lost: its lease expired while the task was running'
                            WHERE id = $1""",
                        row["id"],
                    )
                    await append_events(conn, row["id"], [("status", "failed")])
                    done.append((row["id"], "failed"))
        return done

    async def release(self, owner: str) -> list[tuple[str, str]]:
        """An executor stopping: its leases end now, and its running tasks are reaped at once."""
        await self.store.pool.execute(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 second' "
            "WHERE lease_owner = $1 AND status = 'running'",
            owner,
        )
        return await self.reap()

    async def queue_depth(self) -> int:
        return await self.store.pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'queued'")

    async def events_after(self, task_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        rows = await self.store.pool.fetch(
            """SELECT seq, kind, data, (extract(epoch FROM created_at) * 1000)::bigint AS at_ms FROM task_events
                WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            task_id,
            after_seq,
            limit,
        )
        return [Event(r["seq"], r["kind"], r["data"], r["at_ms"]) for r in rows]
