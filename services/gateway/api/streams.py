"""Several router calls as one OpenAI answer: ``n`` choices are ``n`` model calls, made concurrently.

Unary: every call must succeed (one failing cancels the others and its error is the answer). Streamed:
the first chunk of every stream is awaited before the HTTP answer starts, so a refusal (unknown model,
capability, budget, full queue) keeps its real status; then chunks are passed on as they come, each
tagged with its choice's index. The answer is an :class:`SseResponse`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from goblin.v1 import common_pb2
from services.gateway.clients import ChatStream
from services.gateway.errors import ApiError

T = TypeVar("T")


async def all_or_none(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Every result, in order; the first failure cancels the rest and is raised as it is."""
    if len(calls) == 1:
        return [await calls[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]  # type: ignore[arg-type]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def first_chunks(streams: Sequence[ChatStream]) -> list[common_pb2.ChatChunk | None]:
    """The first chunk of each stream; on a failure every stream is cancelled and the error raised."""
    try:
        return await all_or_none([s.read() for s in streams])
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise


async def merged(
    streams: Sequence[ChatStream], firsts: Sequence[common_pb2.ChatChunk | None]
) -> AsyncIterator[tuple[int, common_pb2.ChatChunk]]:
    """``(choice index, chunk)`` from every stream as they arrive, starting with ``firsts``; an error of
    any stream ends them all (raised as :class:`ApiError`)."""
    if len(streams) == 1:
        chunk = firsts[0]
        while chunk is not None:
            yield 0, chunk
            chunk = await streams[0].read()
        return
    queue: asyncio.Queue[tuple[int, common_pb2.ChatChunk | None, ApiError | None]] = asyncio.Queue()

    async def pump(index: int, stream: ChatStream, chunk: common_pb2.ChatChunk | None) -> None:
        try:
            while chunk is not None:
                await queue.put((index, chunk, None))
                chunk = await stream.read()
            await queue.put((index, None, None))
        except ApiError as error:
            await queue.put((index, None, error))

    tasks = [asyncio.create_task(pump(i, s, f)) for i, (s, f) in enumerate(zip(streams, firsts, strict=True))]
    open_streams = len(streams)
    try:
        while open_streams:
            index, chunk, error = await queue.get()
            if error is not None:
                raise error
            if chunk is None:
                open_streams -= 1
                continue
            yield index, chunk
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.cancel()


class SseResponse(Response):
    """A ``text/event-stream`` answer of ``events`` (bytes, each one or more whole events), as Starlette's
    StreamingResponse sends it under the ASGI spec the servers speak (2.3): the head, each event as it
    comes, the end; and when the client goes away (``http.disconnect``) the events stop where they are
    (their generator is closed, which cancels the model's stream) and the answer ends without error.

    What differs is the cost of the first event: StreamingResponse runs the events and the disconnect
    watch as two tasks of an anyio task group; here the events are sent from the request's own task and
    only the watch is a task, which cancels that one when the client leaves (bench/RESULTS.md, "Router
    CPU profile")."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    task.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or task.uncancel():
                raise  # cancelled from outside (shutdown, a deadline), not by the client leaving
        finally:
            watcher.cancel()
            await self.events.aclose()  # type: ignore[attr-defined]
