"""The executor service as the gateway uses it: goblins, tasks, and a task's event stream.

Answers stay the executor's protobuf messages (the schemas in ``api/schemas/tasks.py`` build the JSON
from them once); only the error translation is added here.
"""

from __future__ import annotations

import grpc

from goblin.v1 import common_pb2, executor_pb2, executor_pb2_grpc
from services.gateway.clients.base import ServiceClient
from services.gateway.clients.identity import metadata

# Unary task calls touch Postgres once or twice: anything slower is an executor in trouble.
DEADLINE_S = 15.0


class TaskEventStream:
    """A task's events until the final status (``None`` then); failures raised as ApiError."""

    __slots__ = ("_call", "_client")

    def __init__(self, client: ServiceClient, call: grpc.aio.UnaryStreamCall) -> None:
        self._client = client
        self._call = call

    async def read(self) -> executor_pb2.TaskEvent | None:
        """The next event, or ``None`` once the stream has ended."""
        try:
            event = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._client.error(exc) from None
        return None if event is grpc.aio.EOF else event

    def cancel(self) -> None:
        """Stop following (the client went away)."""
        self._call.cancel()


class ExecutorClient(ServiceClient):
    """Typed calls to ``goblin.v1.Executor``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__("executor", channel)
        self._stub = executor_pb2_grpc.ExecutorStub(channel)

    async def list_goblins(self, context: common_pb2.RequestContext) -> list[executor_pb2.Goblin]:
        """Every goblin of the executor's catalog."""
        reply = await self.call(self._stub.ListGoblins, executor_pb2.ListGoblinsRequest(context=context), DEADLINE_S)
        return list(reply.goblins)

    async def run_task(self, request: executor_pb2.RunTaskRequest) -> executor_pb2.Task:
        """Validate and queue (or dry-run) a task."""
        return await self.call(self._stub.RunTask, request, DEADLINE_S)

    async def get_task(self, context: common_pb2.RequestContext, task_id: str) -> executor_pb2.Task:
        return await self.call(
            self._stub.GetTask, executor_pb2.GetTaskRequest(context=context, task_id=task_id), DEADLINE_S
        )

    async def list_tasks(
        self, context: common_pb2.RequestContext, *, status: str, limit: int
    ) -> list[executor_pb2.Task]:
        reply = await self.call(
            self._stub.ListTasks,
            executor_pb2.ListTasksRequest(context=context, status=status, limit=limit),
            DEADLINE_S,
        )
        return list(reply.tasks)

    async def cancel_task(self, context: common_pb2.RequestContext, task_id: str) -> executor_pb2.Task:
        return await self.call(
            self._stub.CancelTask, executor_pb2.CancelTaskRequest(context=context, task_id=task_id), DEADLINE_S
        )

    def stream_events(self, context: common_pb2.RequestContext, task_id: str, after_seq: int) -> TaskEventStream:
        """The task's events after ``after_seq``, live until its final status; no deadline (a task may
        run for its whole timeout)."""
        request = executor_pb2.StreamTaskEventsRequest(context=context, task_id=task_id, after_seq=after_seq)
        return TaskEventStream(self, self._stub.StreamTaskEvents(request, metadata=metadata()))
