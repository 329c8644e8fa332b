"""gRPC face of the executor: who asks comes from the verified principal only (tenant, hashed user,
admin), never from a request field; a task another tenant or user owns does not exist for the caller."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from goblin.v1 import executor_pb2, executor_pb2_grpc
from services.common.context import current_correlation_id, hash_user_id
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.principal import current_principal
from services.common.secrets import SecretGuard
from services.common.telemetry import current_traceparent
from services.executor import sandbox
from services.executor.config import ExecutorSettings
from services.executor.notifier import Notifier
from services.executor.repository import FINAL_STATUSES, STATUSES, NewTask, TaskRepository
from services.executor.runspec import RunSpecs

SCOPE = "tasks"
MAX_LIST = 200
MAX_IDEMPOTENCY_KEY = 200
MAX_ARGS_JSON = 64 * 1024
MAX_ARGS_DEPTH = 8
# A stream waiting for events looks on its own this often, in case a NOTIFY was missed.
STREAM_POLL_S = 1.0


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    user_hash: str
    is_admin: bool


def caller() -> Caller:
    """The verified caller, who must hold the ``tasks`` scope (``*`` holds it)."""
    principal = current_principal()
    if principal is None or not principal.tenant_id or not principal.user_id:
        raise PermissionDenied("tasks need an authenticated caller")
    if not principal.has_scope(SCOPE):
        raise PermissionDenied(f"this credential lacks the scope: {SCOPE}")
    return Caller(principal.tenant_id, hash_user_id(principal.user_id), principal.is_admin)


def visible(row: asyncpg.Record | None, who: Caller) -> asyncpg.Record:
    """The row if the caller may see it: their own, or any for an admin; otherwise NotFound, the same
    answer as for a task that does not exist (ids of others' tasks are not confirmed)."""
    if row is None or not (who.is_admin or (row["tenant_id"] == who.tenant_id and row["user_hash"] == who.user_hash)):
        raise NotFound("no such task")
    return row


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


def task_to_proto(row: asyncpg.Record) -> executor_pb2.Task:
    args = json.loads(row["args"]) if row["args"] else {}
    started, finished = row["started_at"], row["finished_at"]
    duration = (finished - started).total_seconds() if started is not None and finished is not None else 0.0
    return executor_pb2.Task(
        id=row["id"],
        goblin=row["goblin"] or "",
        status=row["status"],
        dry_run=row["dry_run"],
        exit_code=row["exit_code"],
        stdout=row["stdout"],
        stderr=row["stderr"],
        created=_ms(row["created_at"]),
        started=_ms(started),
        finished=_ms(finished),
        duration_s=duration,
        error=row["error"] or "",
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        signal=row["signal"] or "",
        tenant_id=row["tenant_id"] or "",
        requester=row["user_hash"] or "",
        stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"],
        args={k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()},
        args_json=json.dumps(args),
        plan_json=row["plan"] or "",
        is_script=row["is_script"],
        script_language=row["script_language"] or "",
        timeout_s=row["timeout_s"],
    )


def _check_json(value: Any, where: str, depth: int) -> None:
    """Arguments Postgres can store and a goblin can take: no NUL (JSONB refuses it), no deep nesting."""
    if depth > MAX_ARGS_DEPTH:
        raise InvalidArgument(f"{where}: nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(f"{where}: must not contain NUL")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, where, depth + 1)
            _check_json(item, f"{where}.{key[:64]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)


def _task_id(value: str) -> str:
    """Task ids are 32 hex digits; anything else names no task (and never reaches SQL as text)."""
    try:
        return uuid.UUID(hex=value).hex if len(value) == 32 else ""
    except ValueError:
        return ""


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(
        self,
        repository: TaskRepository,
        specs: RunSpecs,
        notifier: Notifier,
        request_guard: SecretGuard,
        settings: ExecutorSettings,
    ) -> None:
        self.repository = repository
        self.specs = specs
        self.notifier = notifier
        self.request_guard = request_guard
        self.settings = settings

    async def ListGoblins(self, request, context: grpc.aio.ServicerContext) -> executor_pb2.ListGoblinsResponse:
        caller()
        return executor_pb2.ListGoblinsResponse(
            goblins=[
                executor_pb2.Goblin(
                    name=g.name,
                    description=g.description,
                    args=sorted(g.args_schema.get("properties", {})),
                    default_timeout_s=int(g.limits.timeout_s),
                    args_schema_json=json.dumps(g.args_schema),
                    idempotent=g.idempotent,
                )
                for g in self.specs.catalog.list()
            ]
        )

    async def RunTask(
        self, request: executor_pb2.RunTaskRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.Task:
        who = caller()
        key = request.idempotency_key.strip()
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument(f"idempotency_key: at most {MAX_IDEMPOTENCY_KEY} characters")
        if request.script and request.goblin:
            raise InvalidArgument("goblin: name a goblin or send a script, not both")
        args = self._args(request)
        script_sha = None
        if request.script:
            if not self.settings.allow_scripts:
                raise PermissionDenied("scripts are disabled on this executor (GOBLIN_EXECUTOR_ALLOW_SCRIPTS=false)")
            if not who.is_admin:
                raise PermissionDenied("only an admin (role admin, with the admin scope) may run a script")
            spec = self.specs.for_script(request.script, request.script_language, request.timeout_s)
            script_sha = hashlib.sha256(request.script.encode()).hexdigest()
            max_attempts = 1
        elif request.goblin:
            spec = self.specs.for_goblin(request.goblin, args, request.timeout_s)
            max_attempts = self.specs.max_attempts(request.goblin)
        else:
            raise InvalidArgument("goblin: required (or a script, where scripts are enabled)")
        # What is stored must hold no secret: a script or argument with one is refused, not redacted
        # (either would then run something other than what was asked).
        await self.request_guard.check_async(
            [request.script, json.dumps(args)], tenant_id=who.tenant_id, user_hash=who.user_hash
        )
        row, _new = await self.repository.insert(
            NewTask(
                id=uuid.uuid4().hex,
                tenant_id=who.tenant_id,
                user_hash=who.user_hash,
                goblin=request.goblin,
                args=args,
                timeout_s=int(spec.limits.timeout_s),
                max_attempts=max_attempts,
                idempotency_key=key or None,
                script=request.script or None,
                script_language=request.script_language if request.script else None,
                script_sha256=script_sha,
                dry_run=request.dry_run,
                plan=sandbox.plan(spec) if request.dry_run else None,
                correlation_id=current_correlation_id(),
                trace_context=current_traceparent(),
            ),
            max_active=self.settings.max_queued_per_tenant,
        )
        return task_to_proto(row)

    @staticmethod
    def _args(request: executor_pb2.RunTaskRequest) -> dict[str, Any]:
        if not request.args_json:
            args: dict[str, Any] = dict(request.args)
            _check_json(args, "args", 0)
            return args
        if len(request.args_json) > MAX_ARGS_JSON:
            raise InvalidArgument(f"args: at most {MAX_ARGS_JSON} bytes of JSON")
        try:
            args = json.loads(request.args_json)
        except (ValueError, RecursionError):
            raise InvalidArgument("args: not valid JSON") from None
        if not isinstance(args, dict):
            raise InvalidArgument("args: must be a JSON object")
        _check_json(args, "args", 0)
        return args

    async def GetTask(
        self, request: executor_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.Task:
        who = caller()
        return task_to_proto(visible(await self._get(request.task_id), who))

    async def _get(self, task_id: str) -> asyncpg.Record | None:
        task_id = _task_id(task_id)
        return await self.repository.get(task_id) if task_id else None

    async def ListTasks(
        self, request: executor_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.ListTasksResponse:
        who = caller()
        status = request.status.strip() or None
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status: one of {', '.join(sorted(STATUSES))}")
        limit = min(request.limit or 50, MAX_LIST)
        if limit < 1:
            raise InvalidArgument(f"limit: between 1 and {MAX_LIST}")
        rows = await self.repository.list(
            tenant_id=None if who.is_admin else who.tenant_id,
            user_hash=None if who.is_admin else who.user_hash,
            status=status,
            limit=limit,
        )
        return executor_pb2.ListTasksResponse(tasks=[task_to_proto(r) for r in rows])

    async def CancelTask(
        self, request: executor_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.Task:
        who = caller()
        row = visible(await self._get(request.task_id), who)
        return task_to_proto(await self.repository.cancel(row["id"]))

    async def StreamTaskEvents(
        self, request: executor_pb2.StreamTaskEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.TaskEvent]:
        """Events after ``after_seq`` from Postgres, then live, until the final status event: from any
        replica, since every event is a row and NOTIFY reaches every listener."""
        who = caller()
        row = visible(await self._get(request.task_id), who)
        task_id, after = row["id"], max(0, request.after_seq)
        with self.notifier.watching(task_id) as changed:
            while True:
                changed.clear()
                events = await self.repository.events_after(task_id, after)
                for event in events:
                    after = event.seq
                    yield executor_pb2.TaskEvent(
                        task_id=task_id, seq=event.seq, kind=event.kind, data=event.data, at=event.at_ms
                    )
                    if event.kind == "status" and event.data in FINAL_STATUSES:
                        return
                if events:
                    continue  # there may be more than one page
                current = await self.repository.get(task_id)
                if current is None:
                    return
                if current["status"] in FINAL_STATUSES and current["next_seq"] <= after:
                    return  # resumed after the final event
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STREAM_POLL_S):
                        await changed.wait()
