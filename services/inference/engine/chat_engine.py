"""The asyncio face of the engine: :class:`ChatEngine` loads the model on its worker thread, renders chat
prompts with the model's own template, admits requests (or refuses them with ``QueueFull``) and turns
the worker's events into async streams. Nothing here waits for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams
from services.common.chat_content import NO_OPTIONS, ChatOptions, TokenLogprob, ToolCall
from services.common.errors import GoblinError, InvalidArgument, Unavailable
from services.common.process import usable_cores
from services.inference.engine.admission import Admission
from services.inference.engine.commands import Call, Cancel, Command, LoadedModel, Output, Request, Shutdown, Submit
from services.inference.engine.grammar import constraint_for
from services.inference.engine.observer import EngineObserver, EngineStats
from services.inference.engine.prompt import template_turns
from services.inference.engine.sampling import Shaping
from services.inference.engine.toolcalls import ToolCallReader
from services.inference.engine.worker import Worker

logger = logging.getLogger(__name__)


class ChatEngine:
    """The local chat model, serving many concurrent streams from one llama.cpp context.

    ``n_ctx`` is the context window of each request (prompt + output); ``n_threads`` defaults to the
    cores this process may use and is the most threads that decode. With ``adaptive_threads`` the
    worker decodes on fewer, down to ``min_threads`` (default ``n_threads - 1``), while other processes
    need a core (:mod:`.threads`). ``max_sequences`` requests decode together and ``max_queue`` more may
    wait. ``prefill_chunk`` bounds how many prompt tokens one step processes, so that a long new prompt
    delays the streams already running by a bounded amount.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        min_threads: int | None = None,
        adaptive_threads: bool = True,
        max_queue: int = 16,
        max_sequences: int = 4,
        prefill_chunk: int = 256,
        observer: EngineObserver | None = None,
    ) -> None:
        if n_ctx < 16:
            raise ValueError("n_ctx must be at least 16")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if not 1 <= max_sequences <= 64:
            raise ValueError("max_sequences must be between 1 and 64")
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or usable_cores()
        self.min_threads = min_threads or max(1, self.n_threads - 1)
        if not 1 <= self.min_threads <= self.n_threads:
            raise ValueError(f"min_threads ({self.min_threads}) must be between 1 and n_threads ({self.n_threads})")
        self.adaptive_threads = adaptive_threads
        # Prompt processing is a short burst that parallelises well: every usable core by default, as
        # llama-cpp-python does, even when decoding leaves a core to the other services.
        self.n_threads_batch = n_threads_batch or usable_cores()
        self.max_sequences = max_sequences
        self.prefill_chunk = prefill_chunk
        self._observer = observer or EngineObserver()
        self._admission = Admission(capacity=max_queue, max_sequences=max_sequences)
        self._inbox: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._worker: Worker | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._tool_role = False  # whether the model's chat template has a "tool" role
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded and taking requests."""
        return self._loaded

    async def start(self) -> None:
        """Load the model on the worker thread; returns once it can take requests."""
        if self._thread is not None:
            return
        if not self.model_path.is_file():
            raise FileNotFoundError(f"chat model {self.model_path} is not a file")
        self._loop = asyncio.get_running_loop()
        worker = Worker(self)
        ready: Future[LoadedModel] = Future()
        self._worker = worker
        self._thread = threading.Thread(target=worker.run, args=(ready,), name="llama-worker", daemon=True)
        self._thread.start()
        try:
            info = await asyncio.wrap_future(ready)
        except BaseException:
            if ready.cancelled() or (ready.done() and ready.exception() is not None):
                # The worker exits without serving: forget it so that start() can be tried again. (Once
                # it is loading, it cannot be cancelled; it then serves until close().)
                self._thread, self._worker = None, None
            raise
        self._formatter = Jinja2ChatFormatter(
            template=info.chat_template, eos_token=info.eos_text, bos_token=info.bos_text
        )
        self._tool_role = "tool" in info.chat_template
        self._loaded = True
        logger.info(
            "chat model loaded",
            extra={
                "model_path": str(self.model_path),
                "n_ctx": self.n_ctx,
                "n_threads": self.n_threads,
                "min_threads": self.min_threads if self.adaptive_threads else self.n_threads,
            },
        )
        self._observer.model_loaded(True)
        self._observer.threads_changed(self.current_threads)
        self._report_queue()

    async def close(self) -> None:
        """Stop: running and waiting streams end with finish_reason "cancelled", then the model is freed."""
        thread = self._thread
        if thread is None:
            return
        self._loaded = False
        self._inbox.put(Shutdown())
        await asyncio.to_thread(thread.join)
        self._thread, self._worker, self._formatter = None, None, None
        self._observer.model_loaded(False)
        self._report_queue()

    @property
    def current_threads(self) -> int:
        """The threads decoding now: ``n_threads`` unless the worker stepped down (adaptive threads)."""
        worker = self._worker
        return worker.decode_threads if worker is not None else self.n_threads

    def stats(self) -> EngineStats:
        """Queue length and capacity, how many sequences are decoding now, and on how many threads."""
        waiting, active = self._admission.snapshot()
        return EngineStats(
            loaded=self._loaded,
            queue_length=waiting,
            queue_capacity=self._admission.capacity,
            active_sequences=active,
            max_sequences=self.max_sequences,
            threads=self.current_threads,
        )

    def render_chat(self, messages: Sequence[Message], options: ChatOptions = NO_OPTIONS) -> str:
        """The prompt for ``messages``, made with the model's own chat template (from the GGUF metadata),
        ending with the opening of the assistant's turn. Under ``options`` that constrain the answer the
        model is told the tools or the schema (see :mod:`.prompt`)."""
        formatter = self._formatter
        if formatter is None:
            raise Unavailable("the local model is not loaded")
        turns = template_turns(messages, options, constraint_for(options), tool_role=self._tool_role)
        try:
            return formatter(messages=turns).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InvalidArgument(f"the model's chat template rejects these messages: {exc}") from exc

    async def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """The model's tokens for ``text`` (computed on the worker thread, between decoding steps)."""
        worker = self._require_worker()
        result: Future[list[int]] = Future()
        self._inbox.put(Call(lambda: worker.tokenize(text, add_special, parse_special), result))
        return await asyncio.wrap_future(result)

    def stream_chat(
        self, messages: Sequence[Message], params: SamplingParams | None = None, options: ChatOptions = NO_OPTIONS
    ) -> AsyncGenerator[ChatDelta, None]:
        """Stream the answer to ``messages``: text (or tool-call) deltas, then one event with finish
        reason and usage.

        ``options`` may constrain the answer by grammar: ``response_format`` json_object or json_schema
        (the text is JSON in the schema's language), or a forced tool call (``tool_choice`` required or
        a named function: tool-call deltas instead of text, finish reason "tool_calls"). Cut by
        ``max_tokens``, either ends with finish reason "length" and what was written so far.

        Errors surface on the first iteration: :class:`QueueFull` at once when the queue is full,
        ``InvalidArgument`` for bad input or a prompt that does not fit the context. Closing the
        iterator, or cancelling the task iterating it, drops the request.
        """
        return self._stream(messages=messages, prompt=None, params=params or SamplingParams(), options=options)

    def stream_complete(self, prompt: str, params: SamplingParams | None = None) -> AsyncGenerator[ChatDelta, None]:
        """Stream a plain continuation of ``prompt`` (no chat template), like :meth:`stream_chat`."""
        return self._stream(messages=None, prompt=prompt, params=params or SamplingParams(), options=NO_OPTIONS)

    async def chat(
        self, messages: Sequence[Message], params: SamplingParams | None = None, options: ChatOptions = NO_OPTIONS
    ) -> ChatResult:
        """The whole answer to ``messages`` (see :meth:`stream_chat`)."""
        return await _collect(self.stream_chat(messages, params, options))

    async def complete(self, prompt: str, params: SamplingParams | None = None) -> ChatResult:
        """The whole continuation of ``prompt``."""
        return await _collect(self.stream_complete(prompt, params))

    async def _stream(
        self,
        *,
        messages: Sequence[Message] | None,
        prompt: str | None,
        params: SamplingParams,
        options: ChatOptions,
    ) -> AsyncGenerator[ChatDelta, None]:
        self._require_worker()
        _check_max_tokens(params, self.n_ctx)
        shaping = _shaping(params, options)
        if messages is not None:
            if any(m.has_images for m in messages):
                raise InvalidArgument("the local model cannot read images")
            # The template writes any special tokens (BOS included) itself.
            text, add_special = self.render_chat(messages, options), False
        else:
            if not isinstance(prompt, str):
                raise InvalidArgument("prompt must be a string")
            text, add_special = prompt, True
        request = Request(
            prompt=text,
            add_special=add_special,
            params=params,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            submitted_at=time.perf_counter(),
            shaping=shaping,
        )
        constraint = shaping.constraint
        reader = ToolCallReader(constraint.tools) if constraint is not None and constraint.is_tool_call else None
        self._admission.reserve()
        self._report_queue()
        self._inbox.put(Submit(request))
        ended = False
        held: Output | BaseException | None = None  # taken from the queue by _coalesce, not yet handled
        try:
            while True:
                item, held = (held, None) if held is not None else (await request.events.get(), None)
                if isinstance(item, Output) and not item.finish_reason:
                    item, held = _coalesce(item, request.events)
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                ended = bool(item.finish_reason)
                delta = _delta(item, reader)
                if delta is not None:
                    yield delta
                if ended:
                    return
        finally:
            if not ended:
                # The consumer left (closed the stream, or its task was cancelled): free the place.
                request.cancelled = True
                self._inbox.put(Cancel(request))

    def _require_worker(self) -> Worker:
        worker = self._worker
        if worker is None or not self._loaded:
            raise Unavailable("the local model is not loaded")
        return worker

    def _report_queue(self) -> None:
        """Tell the observer the current queue length (on the event loop)."""
        waiting, _ = self._admission.snapshot()
        self._observer.queue_changed(waiting, self._admission.capacity)

    def _call_in_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the engine's event loop; callable from the worker thread."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(callback, *args)


def _shaping(params: SamplingParams, options: ChatOptions) -> Shaping:
    """What ``params`` and ``options`` ask of sampling, in the engine's terms."""
    return Shaping(
        constraint=constraint_for(options),
        logit_bias=dict(params.logit_bias),
        presence_penalty=params.presence_penalty or 0.0,
        frequency_penalty=params.frequency_penalty or 0.0,
        top_logprobs=(params.top_logprobs or 0) if params.logprobs else None,
    )


def _coalesce(
    first: Output, events: asyncio.Queue[Output | BaseException]
) -> tuple[Output, Output | BaseException | None]:
    """``first`` joined with the text already waiting behind it, and the first event taken that is not
    text (an end or an error), if any. The worker sends one event per token; when the consumer (the gRPC
    stream, and the router and gateway behind it) falls behind the decoder, the tokens that piled up go
    out as one delta instead of one message each. The text and logprobs are the same, in the same order."""
    if events.empty():
        return first, None
    texts, logprobs = [first.text], list(first.logprobs)
    following: Output | BaseException | None = None
    while not events.empty():
        following = events.get_nowait()
        if isinstance(following, BaseException) or following.finish_reason:
            break
        texts.append(following.text)
        logprobs.extend(following.logprobs)
        following = None
    return Output(text="".join(texts), logprobs=tuple(logprobs)), following


def _delta(output: Output, reader: ToolCallReader | None) -> ChatDelta | None:
    """The worker's output as a stream event: text as it is, or, under a forced tool call, the pieces
    of the call (and finish reason "tool_calls" once it is whole). None when it adds nothing."""
    if reader is None:
        if not (output.text or output.logprobs or output.finish_reason):
            return None
        return ChatDelta(
            text=output.text, finish_reason=output.finish_reason, usage=output.usage, logprobs=output.logprobs
        )
    calls = tuple(reader.feed(output.text))
    reason = output.finish_reason
    if reason:
        calls += tuple(reader.finish())
        if reason == "stop" and reader.complete:
            reason = "tool_calls"
    if not (calls or output.logprobs or reason):
        return None
    return ChatDelta(tool_calls=calls, finish_reason=reason, usage=output.usage, logprobs=output.logprobs)


async def _collect(stream: AsyncGenerator[ChatDelta, None]) -> ChatResult:
    """Join a stream's deltas into one :class:`ChatResult`."""
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            parts.append(event.text)
            logprobs.extend(event.logprobs)
            for piece in event.tool_calls:
                call = calls.setdefault(piece.index, ["", "", ""])
                call[0] = call[0] or piece.id
                call[1] = call[1] or piece.name
                call[2] += piece.arguments
            if event.finish_reason:
                assert event.usage is not None
                return ChatResult(
                    text="".join(parts),
                    finish_reason=event.finish_reason,
                    usage=event.usage,
                    tool_calls=tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in calls.values()),
                    logprobs=tuple(logprobs),
                )
    raise GoblinError("the stream ended without a finish event")


def _check_max_tokens(params: SamplingParams, n_ctx: int) -> None:
    """The one limit of the parameters that is this engine's own (the rest are checked when
    SamplingParams is made): the output must fit the context window."""
    if params.max_tokens is not None and params.max_tokens >= n_ctx:
        raise InvalidArgument(f"max_tokens must be between 1 and {n_ctx - 1} (the context window is {n_ctx} tokens)")
