"""What crosses between the event loop and the worker thread that owns llama.cpp.

The loop puts commands in the worker's inbox (a thread-safe queue); the worker answers a request
through its ``events`` queue with ``loop.call_soon_threadsafe``, and a call through its future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from services.common.chat import SamplingParams, Usage
from services.common.chat_content import TokenLogprob
from services.inference.engine.sampling import NO_SHAPING, Shaping


@dataclass(frozen=True)
class Output:
    """What the worker streams for a request: text (with its tokens' logprobs when asked for), and last
    one event with the finish reason and usage."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str = ""
    usage: Usage | None = None


@dataclass(eq=False)
class Request:
    """A submitted request as both threads see it."""

    prompt: str
    add_special: bool
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Output | BaseException]
    submitted_at: float
    shaping: Shaping = NO_SHAPING
    # Set on the event loop when the consumer leaves; the worker then stops sending events.
    cancelled: bool = False


@dataclass(eq=False)
class Submit:
    request: Request


@dataclass(eq=False)
class Cancel:
    request: Request


@dataclass(eq=False)
class Call:
    """Run ``function`` on the worker thread and put its result in ``result``."""

    function: Callable[[], Any]
    result: Future[Any]


class Shutdown:
    pass


Command = Submit | Cancel | Call | Shutdown


@dataclass(frozen=True)
class LoadedModel:
    """What the worker tells the loop about the model it loaded: enough to render chat prompts."""

    chat_template: str
    bos_text: str
    eos_text: str
