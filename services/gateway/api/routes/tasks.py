"""Tasks: run a goblin (or, for admins where enabled, a script) on the executor, follow it, cancel it.

Every route needs the ``tasks`` scope (``*`` holds it). Who asks reaches the executor only as the
signed principal; the executor decides what the caller may see (their own tasks; admins all) and
answers 404 for a task that is someone else's, as for one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from goblin.v1 import auth_pb2, executor_pb2
from services.gateway.api.routes.openai import SSE_HEADERS
from services.gateway.api.schemas.tasks import (
    GoblinList,
    GoblinOut,
    TaskCreateBody,
    TaskId,
    TaskList,
    TaskOut,
    TaskStatus,
)
from services.gateway.clients import TaskEventStream
from services.gateway.deps import StateDep, principal_context, require_scopes
from services.gateway.errors import ApiError

router = APIRouter(tags=["tasks"])

TasksDep = Annotated[auth_pb2.Principal, Depends(require_scopes("tasks"))]
MAX_IDEMPOTENCY_KEY = 200


@router.get("/v1/goblins", response_model=GoblinList, summary="The goblins this executor runs")
async def list_goblins(principal: TasksDep, state: StateDep, request: Request) -> GoblinList:
    goblins = await state.clients.executor.list_goblins(principal_context(principal, request))
    return GoblinList(data=[GoblinOut.of(g) for g in goblins])


@router.post("/v1/tasks", response_model=TaskOut, status_code=202, summary="Run a goblin (or a script)")
async def create_task(
    body: TaskCreateBody,
    principal: TasksDep,
    state: StateDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> TaskOut:
    """Validated before it is accepted (400 naming the field); 202 with the task, queued. With
    ``Idempotency-Key`` a retried request returns the same task; ``dry_run`` runs nothing."""
    task = await state.clients.executor.run_task(
        executor_pb2.RunTaskRequest(
            context=principal_context(principal, request),
            goblin=body.goblin or "",
            script=body.script or "",
            script_language=body.script_language if body.script else "",
            args_json=body.args_json(),
            dry_run=body.dry_run,
            timeout_s=body.timeout_s,
            idempotency_key=idempotency_key or "",
        )
    )
    return TaskOut.of(task)


@router.get("/v1/tasks", response_model=TaskList, summary="Your tasks, newest first (admins: everyone's)")
async def list_tasks(
    principal: TasksDep,
    state: StateDep,
    request: Request,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TaskList:
    tasks = await state.clients.executor.list_tasks(
        principal_context(principal, request), status=status or "", limit=limit
    )
    return TaskList(data=[TaskOut.of(t) for t in tasks])


@router.get("/v1/tasks/{task_id}", response_model=TaskOut, summary="One task")
async def get_task(task_id: TaskId, principal: TasksDep, state: StateDep, request: Request) -> TaskOut:
    return TaskOut.of(await state.clients.executor.get_task(principal_context(principal, request), task_id))


@router.post("/v1/tasks/{task_id}/cancel", response_model=TaskOut, summary="Cancel a task")
async def cancel_task(task_id: TaskId, principal: TasksDep, state: StateDep, request: Request) -> TaskOut:
    """A queued task is cancelled at once; a running one is killed (its whole process group) by the
    executor running it, and its status follows; a finished task is answered as it is."""
    return TaskOut.of(await state.clients.executor.cancel_task(principal_context(principal, request), task_id))


def _resume_from(last_event_id: str | None, after: int | None) -> int:
    if after is not None:
        return after
    if not last_event_id:
        return 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise ApiError(400, "invalid_request", "Last-Event-ID must be an event id (a number)") from None
    if not 0 <= value < 2**63:
        raise ApiError(400, "invalid_request", "Last-Event-ID is out of range")
    return value


def _sse(event: executor_pb2.TaskEvent) -> str:
    payload = {"seq": event.seq, "kind": event.kind, "data": event.data, "at": event.at}
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


@router.get("/v1/tasks/{task_id}/events", summary="A task's output and status changes, live (SSE)")
async def task_events(
    task_id: TaskId,
    principal: TasksDep,
    state: StateDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0, lt=2**63, description="resume after this event id")] = None,
) -> StreamingResponse:
    """Server-sent events: ``id:`` is the event's number, ``event:`` its kind (status, stdout, stderr);
    reconnect with ``Last-Event-ID`` to get what was missed. The stream ends after the final status."""
    stream = state.clients.executor.stream_events(
        principal_context(principal, request), task_id, _resume_from(last_event_id, after)
    )
    # Read the first event before answering: a task that is not the caller's is a real 404.
    first = await stream.read()
    return StreamingResponse(_events(stream, first), media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(stream: TaskEventStream, first: executor_pb2.TaskEvent | None) -> AsyncIterator[str]:
    event = first
    try:
        while event is not None:
            yield _sse(event)
            event = await stream.read()
    except ApiError as error:
        yield f"event: error\ndata: {json.dumps({'error': error.error, 'message': error.message})}\n\n"
    finally:
        stream.cancel()
