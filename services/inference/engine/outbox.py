"""What the worker streams to the event loops, handed over once per decoding step.

Every ``loop.call_soon_threadsafe`` wakes the event loop (a write to its self-pipe) and takes the GIL
from the worker while the loop runs the callback. Handed over one token at a time, four streams cost
four wake-ups per step; gathered here and delivered in one callback per loop, they cost one, and the
order of each request's events is unchanged.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from services.inference.engine.commands import Output, Request

Item = tuple[Request, Output | BaseException]


class Outbox:
    """Events for requests, kept until :meth:`flush` hands them to their event loops. Worker thread only."""

    def __init__(self) -> None:
        self._items: list[Item] = []

    def send(self, request: Request, item: Output | BaseException) -> None:
        """Queue ``item`` for ``request`` (dropped when nobody listens any more)."""
        if not request.cancelled:
            self._items.append((request, item))

    def flush(self) -> None:
        """Deliver everything queued: one callback per event loop."""
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[Item]] = defaultdict(list)
        for request, item in items:
            by_loop[request.loop].append((request, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is closed: its requests have nobody left to tell
                for request, _ in batch:
                    request.cancelled = True


def _deliver(batch: list[Item]) -> None:
    """On the event loop: put each event in its request's queue, in order."""
    for request, item in batch:
        request.events.put_nowait(item)
