"""Several router calls as one OpenAI answer: ``n`` choices are ``n`` model calls, made concurrently.

Unary: every call must succeed (one failing cancels the others and its error is the answer). Streamed:
the first chunk of every stream is awaited before the HTTP answer starts, so a refusal (unknown model,
capability, budget, full queue) keeps its real status; then chunks are passed on as they come, each
tagged with its choice's index.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

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
