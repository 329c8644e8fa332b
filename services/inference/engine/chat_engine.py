"""The local chat model: llama.cpp behind an asyncio API, with continuous batching.

How it works:

- One worker thread owns the llama.cpp model and context, which are not thread-safe, and makes every
  llama.cpp call. The event loop hands it commands through a thread-safe inbox and gets events back
  through ``loop.call_soon_threadsafe``; nothing on the event loop waits for the model.
- Up to ``max_sequences`` requests decode together. Each is its own sequence (``seq_id``) in the KV cache;
  every step puts each running sequence's newest token (or the next chunk of its prompt) into one
  ``llama_batch`` and runs one ``llama_decode``, then samples every sequence with its own sampler chain.
  On a CPU a step over four sequences costs little more than a step over one, so concurrent requests
  share the cores instead of waiting for each other.
- Between steps, finished and cancelled sequences leave and the oldest waiting requests take their
  places (FIFO). A stream whose consumer goes away is dropped before the next step, so it stops costing
  compute within one token.
- At most ``max_queue`` requests wait for a place; one more gets :class:`QueueFull` at once, with an
  estimate of when a place frees. The backlog is never unbounded.
- Each sequence has its own KV stream of ``n_ctx`` tokens, so a request admitted with
  prompt + max_tokens <= ``n_ctx`` always fits whatever the others do, and its output does not depend on
  which requests share its batches: the same seed gives the same answer on an idle or a busy engine.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import llama_cpp.llama_cpp as llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.common.errors import GoblinError, InvalidArgument, ResourceExhausted, Unavailable
from services.common.process import usable_cores

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled"]

#: Roles a chat message may have (the roles of goblin.v1.ChatMessage).
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})

# For GGUF files without a chat template: ChatML, the format most open instruct models use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Until the first step has been timed, the retry-after estimate assumes this much per step.
_INITIAL_STEP_SECONDS = 0.05
# Weight of the newest step in the moving average of step time.
_STEP_SMOOTHING = 0.2


class QueueFull(ResourceExhausted):
    """Every place in the waiting queue is taken; ``retry_after`` estimates, in seconds, when one frees."""

    code = "inference_queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """How to generate, shared by chat and text completion (goblin.v1.SamplingParams).

    ``max_tokens`` None means up to the end of the context window. ``temperature`` 0 is greedy decoding.
    ``stop`` strings end the output before they appear; the stop text itself is never returned.
    The same ``seed`` with the same request and parameters gives the same output; None draws a fresh one.
    """

    max_tokens: int | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts, exact from the model's tokenizer.

    ``completion_tokens`` counts every token the model generated for the request (those of a stop string
    included, since they were computed) except the end-of-generation token.
    """

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class StreamEvent:
    """One event of a stream: a text delta, or (last) the finish reason with the usage and no text."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Completion:
    """A whole answer."""

    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class RequestStats:
    """What one request cost, reported to the observer when it ends, however it ends."""

    outcome: FinishReason | Literal["error"]
    prompt_tokens: int
    completion_tokens: int
    queued_seconds: float
    time_to_first_token: float | None
    latency_seconds: float


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load."""

    loaded: bool
    queue_length: int
    queue_capacity: int
    active_sequences: int
    max_sequences: int


class EngineObserver:
    """Hooks for metrics; the service layer subclasses it and overrides what it records.

    Every method is called on the event loop that started the engine, never on the model's thread.
    Times are in seconds and measured from when the request was submitted.
    """

    def model_loaded(self, loaded: bool) -> None:
        """The model finished loading (True) or was unloaded (False)."""

    def queue_changed(self, length: int, capacity: int) -> None:
        """The number of requests waiting for a place changed."""

    def first_token(self, seconds: float) -> None:
        """A request got its first generated token."""

    def request_finished(self, stats: RequestStats) -> None:
        """A request ended: finished, cancelled or failed."""


class ChatEngine:
    """The local chat model, serving many concurrent streams from one llama.cpp context.

    ``n_ctx`` is the context window of each request (prompt + output); ``n_threads`` defaults to the
    cores this process may use. ``max_sequences`` requests decode together and ``max_queue`` more may
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
        # Prompt processing is a short burst that parallelises well: every usable core by default, as
        # llama-cpp-python does, even when decoding leaves a core to the other services.
        self.n_threads_batch = n_threads_batch or usable_cores()
        self.max_sequences = max_sequences
        self.prefill_chunk = prefill_chunk
        self._observer = observer or EngineObserver()
        self._admission = _Admission(capacity=max_queue, max_sequences=max_sequences)
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._worker: _Worker | None = None
        self._formatter: Jinja2ChatFormatter | None = None
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
        worker = _Worker(self)
        ready: Future[_ModelInfo] = Future()
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
        self._loaded = True
        logger.info(
            "chat model loaded",
            extra={"model_path": str(self.model_path), "n_ctx": self.n_ctx, "n_threads": self.n_threads},
        )
        self._observer.model_loaded(True)
        self._report_queue()

    async def close(self) -> None:
        """Stop: running and waiting streams end with finish_reason "cancelled", then the model is freed."""
        thread = self._thread
        if thread is None:
            return
        self._loaded = False
        self._inbox.put(_Shutdown())
        await asyncio.to_thread(thread.join)
        self._thread, self._worker, self._formatter = None, None, None
        self._observer.model_loaded(False)
        self._report_queue()

    def stats(self) -> EngineStats:
        """Queue length and capacity, and how many sequences are decoding now."""
        waiting, active = self._admission.snapshot()
        return EngineStats(
            loaded=self._loaded,
            queue_length=waiting,
            queue_capacity=self._admission.capacity,
            active_sequences=active,
            max_sequences=self.max_sequences,
        )

    def render_chat(self, messages: Sequence[ChatMessage | Mapping[str, str]]) -> str:
        """The prompt for ``messages``, made with the model's own chat template (from the GGUF metadata),
        ending with the opening of the assistant's turn."""
        formatter = self._formatter
        if formatter is None:
            raise Unavailable("the local model is not loaded")
        turns = _chat_turns(messages)
        try:
            return formatter(messages=turns).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InvalidArgument(f"the model's chat template rejects these messages: {exc}") from exc

    async def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """The model's tokens for ``text`` (computed on the worker thread, between decoding steps)."""
        worker = self._require_worker()
        result: Future[list[int]] = Future()
        self._inbox.put(_Call(lambda: worker.tokenize(text, add_special, parse_special), result))
        return await asyncio.wrap_future(result)

    def stream_chat(
        self, messages: Sequence[ChatMessage | Mapping[str, str]], params: SamplingParams | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream the answer to ``messages``: text deltas, then one event with finish reason and usage.

        Errors surface on the first iteration: :class:`QueueFull` at once when the queue is full,
        ``InvalidArgument`` for bad input or a prompt that does not fit the context. Closing the
        iterator, or cancelling the task iterating it, drops the request.
        """
        return self._stream(messages=messages, prompt=None, params=params or SamplingParams())

    def stream_complete(self, prompt: str, params: SamplingParams | None = None) -> AsyncGenerator[StreamEvent, None]:
        """Stream a plain continuation of ``prompt`` (no chat template), like :meth:`stream_chat`."""
        return self._stream(messages=None, prompt=prompt, params=params or SamplingParams())

    async def chat(
        self, messages: Sequence[ChatMessage | Mapping[str, str]], params: SamplingParams | None = None
    ) -> Completion:
        """The whole answer to ``messages``."""
        return await _collect(self.stream_chat(messages, params))

    async def complete(self, prompt: str, params: SamplingParams | None = None) -> Completion:
        """The whole continuation of ``prompt``."""
        return await _collect(self.stream_complete(prompt, params))

    async def _stream(
        self,
        *,
        messages: Sequence[ChatMessage | Mapping[str, str]] | None,
        prompt: str | None,
        params: SamplingParams,
    ) -> AsyncGenerator[StreamEvent, None]:
        self._require_worker()
        _check_params(params, self.n_ctx)
        if messages is not None:
            # The template writes any special tokens (BOS included) itself.
            text, add_special = self.render_chat(messages), False
        else:
            if not isinstance(prompt, str):
                raise InvalidArgument("prompt must be a string")
            text, add_special = prompt, True
        request = _Request(
            prompt=text,
            add_special=add_special,
            params=params,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            submitted_at=time.perf_counter(),
        )
        self._admission.reserve()
        self._report_queue()
        self._inbox.put(_Submit(request))
        ended = False
        try:
            while True:
                item = await request.events.get()
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                ended = item.finish_reason is not None
                yield item
                if ended:
                    return
        finally:
            if not ended:
                # The consumer left (closed the stream, or its task was cancelled): free the place.
                request.cancelled = True
                self._inbox.put(_Cancel(request))

    def _require_worker(self) -> _Worker:
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


async def _collect(stream: AsyncGenerator[StreamEvent, None]) -> Completion:
    """Join a stream's deltas into one :class:`Completion`."""
    parts: list[str] = []
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            parts.append(event.text)
            if event.finish_reason is not None:
                assert event.usage is not None
                return Completion(text="".join(parts), finish_reason=event.finish_reason, usage=event.usage)
    raise GoblinError("the stream ended without a finish event")


def _chat_turns(messages: Sequence[ChatMessage | Mapping[str, str]]) -> list[dict[str, str]]:
    """Messages as the plain dicts chat templates expect, checked."""
    if isinstance(messages, str | bytes) or not messages:
        raise InvalidArgument("messages must be a non-empty list")
    turns = []
    for index, message in enumerate(messages):
        if isinstance(message, ChatMessage):
            role, content = message.role, message.content
        elif isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:
            raise InvalidArgument(f"messages[{index}] is not a message")
        if role not in CHAT_ROLES:
            raise InvalidArgument(f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise InvalidArgument(f"messages[{index}].content must be a string")
        turns.append({"role": role, "content": content})
    return turns


def _check_params(params: SamplingParams, n_ctx: int) -> None:
    """Reject parameters that cannot work, whatever the prompt."""
    if params.max_tokens is not None and not 1 <= params.max_tokens < n_ctx:
        raise InvalidArgument(f"max_tokens must be between 1 and {n_ctx - 1} (the context window is {n_ctx} tokens)")
    if not 0.0 <= params.temperature <= 2.0:
        raise InvalidArgument("temperature must be between 0 and 2")
    if not 0.0 < params.top_p <= 1.0:
        raise InvalidArgument("top_p must be greater than 0 and at most 1")
    if isinstance(params.stop, str) or not all(isinstance(stop, str) and stop for stop in params.stop):
        raise InvalidArgument("stop must be a list of non-empty strings")
    if params.seed is not None and not isinstance(params.seed, int):
        raise InvalidArgument("seed must be an integer")


def _fit_to_context(prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> int:
    """The output budget of a prompt of ``prompt_tokens`` tokens, or InvalidArgument if it cannot fit."""
    if prompt_tokens == 0:
        raise InvalidArgument("the prompt is empty")
    if prompt_tokens >= n_ctx:
        raise InvalidArgument(
            f"the prompt is {prompt_tokens} tokens: no room left in the context window of {n_ctx} tokens"
        )
    if max_tokens is None:
        return n_ctx - prompt_tokens
    if prompt_tokens + max_tokens > n_ctx:
        raise InvalidArgument(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the context window "
            f"of {n_ctx} tokens"
        )
    return max_tokens


class _Admission:
    """Counts of waiting and running requests, shared by the event loop and the worker under one lock.

    A request holds a waiting place from submission until it gets a sequence (or is rejected or
    cancelled first), so the queue limit also covers requests the worker has not looked at yet.
    """

    def __init__(self, *, capacity: int, max_sequences: int) -> None:
        self.capacity = capacity
        self.max_sequences = max_sequences
        self._lock = threading.Lock()
        self._waiting = 0
        self._active = 0
        self._step_seconds = _INITIAL_STEP_SECONDS
        self._steps_to_free_place = 1

    def reserve(self) -> None:
        """Take a waiting place, or raise :class:`QueueFull`."""
        with self._lock:
            if self._waiting >= self.capacity:
                retry_after = self._retry_after()
                raise QueueFull(
                    f"the local model's queue is full ({self._waiting} requests waiting); "
                    f"retry in about {retry_after:.0f} s",
                    retry_after=retry_after,
                )
            self._waiting += 1

    def release_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1

    def admit(self) -> None:
        with self._lock:
            self._waiting -= 1
            self._active += 1

    def release_active(self) -> None:
        with self._lock:
            self._active -= 1

    def record_step(self, seconds: float, steps_to_free_place: int) -> None:
        """Feed the retry-after estimate: how long a step took, and how many steps at most until a running
        sequence ends (its remaining token budget; it may end sooner)."""
        with self._lock:
            self._step_seconds += _STEP_SMOOTHING * (seconds - self._step_seconds)
            self._steps_to_free_place = max(1, steps_to_free_place)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self._waiting, self._active

    def _retry_after(self) -> float:
        # A waiting place frees when the oldest waiting request gets a sequence, that is when the running
        # sequence closest to its token budget ends. Whole seconds, as HTTP Retry-After has them.
        steps = self._steps_to_free_place if self._active >= self.max_sequences else 1
        return float(max(1, math.ceil(steps * self._step_seconds)))


@dataclass(eq=False)
class _Request:
    """A submitted request as both threads see it."""

    prompt: str
    add_special: bool
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[StreamEvent | BaseException]
    submitted_at: float
    # Set on the event loop when the consumer leaves; the worker then stops sending events.
    cancelled: bool = False


@dataclass(eq=False)
class _Submit:
    request: _Request


@dataclass(eq=False)
class _Cancel:
    request: _Request


@dataclass(eq=False)
class _Call:
    """Run ``function`` on the worker thread and put its result in ``result``."""

    function: Callable[[], Any]
    result: Future[Any]


class _Shutdown:
    pass


_Command = _Submit | _Cancel | _Call | _Shutdown


@dataclass(frozen=True)
class _ModelInfo:
    chat_template: str
    bos_text: str
    eos_text: str


@dataclass(eq=False)
class _Waiting:
    """A request the worker has tokenized and accepted, waiting for a sequence."""

    request: _Request
    prompt_tokens: list[int]
    max_tokens: int


class _StopMatcher:
    """Finds stop strings in streamed text without ever letting part of one out.

    Text that might be the beginning of a stop string is held back until the next tokens show whether
    it is; text before a stop string is released and everything from it on is dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""
        self.matched = False

    def feed(self, text: str) -> str:
        """Take new text; return what can be sent now (sets ``matched`` when a stop string completes)."""
        if self.matched:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cuts = [index for stop in self._stops if (index := buffer.find(stop)) >= 0]
        if cuts:
            self.matched = True
            self._held = ""
            return buffer[: min(cuts)]
        keep = self._partial_stop_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text, once generation has ended without completing a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched else held

    def _partial_stop_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that is the beginning of some stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest


@dataclass(eq=False)
class _Sequence:
    """A request that holds a KV-cache sequence; known to the worker thread only."""

    request: _Request
    seq_id: int
    prompt_tokens: list[int]
    max_tokens: int
    sampler: Any  # a llama_sampler chain pointer
    admitted_at: float
    stop: _StopMatcher
    decoder: codecs.IncrementalDecoder
    prefilled: int = 0  # prompt tokens already in the KV cache
    completion_tokens: int = 0
    last_token: int = -1  # the newest sampled token: the next step's input
    output_index: int = -1  # where this sequence's logits are in the current batch, -1 for none
    first_token_at: float | None = None

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt_tokens)

    def usage(self) -> Usage:
        return Usage(prompt_tokens=len(self.prompt_tokens), completion_tokens=self.completion_tokens)


# llama.cpp logs through one process-wide callback; route it to Python logging. Kept at module level
# because llama.cpp holds only a raw pointer to it. ggml's levels: 1 debug, 2 info, 3 warn, 4 error,
# 5 continues the previous message. Its info level dumps the whole model at every load: debug here.
_LLAMA_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_llama_logger = logging.getLogger("llama_cpp")
_last_llama_level = logging.DEBUG


@llama.llama_log_callback
def _log_from_llama(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_llama_level
    python_level = _last_llama_level if level == 5 else _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
    _last_llama_level = python_level
    message = text.decode("utf-8", errors="replace").rstrip()
    if message and _llama_logger.isEnabledFor(python_level):
        _llama_logger.log(python_level, message)


class _Worker:
    """The thread that owns the model: admits requests, runs decoding steps, samples, streams."""

    def __init__(self, engine: ChatEngine) -> None:
        self._engine = engine
        self._observer = engine._observer
        self._admission = engine._admission
        self._inbox = engine._inbox
        self._n_ctx = engine.n_ctx
        self._max_sequences = engine.max_sequences
        self._prefill_chunk = engine.prefill_chunk
        self._waiting: deque[_Waiting] = deque()
        self._active: list[_Sequence] = []
        self._free_seq_ids = list(range(engine.max_sequences - 1, -1, -1))
        self._piece_buffer = ctypes.create_string_buffer(64)
        self._model: Any = None
        self._context: Any = None
        self._memory: Any = None
        self._vocab: Any = None
        self._batch: Any = None

    def run(self, ready: Future[_ModelInfo]) -> None:
        """Thread body: load, then serve until shutdown."""
        if not ready.set_running_or_notify_cancel():
            return  # start() was cancelled before the thread ran
        try:
            info = self._load()
        except BaseException as exc:
            self._free()
            ready.set_exception(exc)
            return
        ready.set_result(info)
        try:
            # Sleep on the inbox only when there is nothing to decode and nobody to admit.
            while self._handle_commands(block=not self._active and not self._waiting):
                self._admit()
                if self._active:
                    self._step_or_fail()
        except BaseException:
            logger.exception("the llama.cpp worker stopped unexpectedly")
            raise
        finally:
            self._stop_everything()
            self._free()

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """Tokens for ``text``; only on this thread."""
        data = text.encode("utf-8")
        capacity = len(data) + 8  # never more tokens than bytes, plus the special ones
        tokens = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if count < 0:
            capacity = -count
            tokens = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if count < 0:
            raise GoblinError(f"llama.cpp could not tokenize the text ({count})")
        return list(tokens[:count])

    # Loading and freeing

    def _load(self) -> _ModelInfo:
        llama.llama_log_set(_log_from_llama, ctypes.c_void_p(0))
        llama.llama_backend_init()
        engine = self._engine
        model = llama.llama_model_load_from_file(str(engine.model_path).encode(), llama.llama_model_default_params())
        if not model:
            raise RuntimeError(f"llama.cpp could not load {engine.model_path} (is it a GGUF model?)")
        self._model = model
        self._vocab = llama.llama_model_get_vocab(model)
        n_ctx_train = llama.llama_model_n_ctx_train(model)
        if self._n_ctx > n_ctx_train:
            logger.warning("n_ctx %d is beyond the %d tokens the model was trained on", self._n_ctx, n_ctx_train)

        params = llama.llama_context_default_params()
        params.n_ctx = self._n_ctx * self._max_sequences
        params.n_seq_max = self._max_sequences
        # One step holds at most a prompt chunk plus one token per running sequence.
        batch_tokens = self._prefill_chunk + self._max_sequences
        params.n_batch = batch_tokens
        params.n_ubatch = batch_tokens
        params.n_threads = engine.n_threads
        params.n_threads_batch = engine.n_threads_batch
        # One KV stream per sequence, each of n_ctx cells. A unified pool would also work, but there a
        # sequence's attention runs over every sequence's cells (masked), so its logits shift in the last
        # bits with whoever shares the batch, and the same seed gives different answers under load.
        params.kv_unified = False
        context = llama.llama_init_from_model(model, params)
        if not context:
            raise RuntimeError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self._context = context
        if llama.llama_n_ctx_seq(context) < self._n_ctx:
            raise RuntimeError(
                f"llama.cpp gave each sequence {llama.llama_n_ctx_seq(context)} tokens, not {self._n_ctx}"
            )
        self._memory = llama.llama_get_memory(context)
        self._batch = llama.llama_batch_init(batch_tokens, 0, 1)

        template = llama.llama_model_chat_template(model, None)
        return _ModelInfo(
            chat_template=template.decode("utf-8") if template else CHATML_TEMPLATE,
            bos_text=self._token_text(llama.llama_vocab_bos(self._vocab)),
            eos_text=self._token_text(llama.llama_vocab_eos(self._vocab)),
        )

    def _token_text(self, token: int) -> str:
        return llama.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace") if token >= 0 else ""

    def _free(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._context:
            llama.llama_free(self._context)
            self._context = None
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None

    # Commands from the event loop

    def _handle_commands(self, *, block: bool) -> bool:
        """Handle what the inbox holds, first waiting for a command if ``block``; False on shutdown."""
        while True:
            try:
                command = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if isinstance(command, _Submit):
                self._accept(command.request)
            elif isinstance(command, _Cancel):
                self._cancel(command.request)
            elif isinstance(command, _Call):
                self._run_call(command)
            else:
                return False

    def _accept(self, request: _Request) -> None:
        """Tokenize and check a new request, then queue it (or answer it with an error)."""
        if request.cancelled:
            self._admission.release_waiting()
            self._engine._call_in_loop(self._engine._report_queue)
            return
        try:
            tokens = self.tokenize(request.prompt, request.add_special, True)
            max_tokens = _fit_to_context(len(tokens), request.params.max_tokens, self._n_ctx)
        except GoblinError as exc:
            self._admission.release_waiting()
            self._engine._call_in_loop(self._engine._report_queue)
            self._send(request, exc)
            return
        self._waiting.append(_Waiting(request=request, prompt_tokens=tokens, max_tokens=max_tokens))

    def _cancel(self, request: _Request) -> None:
        for sequence in self._active:
            if sequence.request is request:
                self._finish(sequence, "cancelled")
                return
        for waiting in self._waiting:
            if waiting.request is request:
                self._waiting.remove(waiting)
                self._admission.release_waiting()
                self._engine._call_in_loop(self._engine._report_queue)
                self._report_finished(request, "cancelled", len(waiting.prompt_tokens), 0, None, None)
                return

    @staticmethod
    def _run_call(call: _Call) -> None:
        try:
            call.result.set_result(call.function())
        except Exception as exc:
            call.result.set_exception(exc)

    # Scheduling

    def _admit(self) -> None:
        """Give free sequences to the oldest waiting requests."""
        while self._waiting and self._free_seq_ids:
            waiting = self._waiting.popleft()
            seq_id = self._free_seq_ids.pop()
            # Whatever an earlier owner left in this sequence must not leak into the new one.
            llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            stops = waiting.request.params.stop
            self._active.append(
                _Sequence(
                    request=waiting.request,
                    seq_id=seq_id,
                    prompt_tokens=waiting.prompt_tokens,
                    max_tokens=waiting.max_tokens,
                    sampler=self._new_sampler(waiting.request.params),
                    admitted_at=time.perf_counter(),
                    stop=_StopMatcher(stops),
                    decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
                )
            )
            self._admission.admit()
            self._engine._call_in_loop(self._engine._report_queue)

    @staticmethod
    def _new_sampler(params: SamplingParams) -> Any:
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if params.temperature == 0.0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        # LLAMA_DEFAULT_SEED asks llama.cpp for a random seed, so a caller's seed is kept below it.
        seed = llama.LLAMA_DEFAULT_SEED if params.seed is None else params.seed % llama.LLAMA_DEFAULT_SEED
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(params.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(params.temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
        return chain

    # Decoding

    def _step_or_fail(self) -> None:
        try:
            self._step()
        except Exception as exc:
            # One bad step must not take the service down: fail the requests in it, keep serving.
            logger.exception("decoding step failed")
            error = exc if isinstance(exc, GoblinError) else GoblinError(f"the local model failed: {exc}")
            for sequence in list(self._active):
                self._finish(sequence, None, error=error)

    def _step(self) -> None:
        """One llama_decode over every running sequence, then one sampled token for each that is ready."""
        batch = self._batch
        count = 0
        prefill_budget = self._prefill_chunk

        def add(token: int, position: int, seq_id: int, wants_logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = position
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = seq_id
            batch.logits[count] = wants_logits
            count += 1

        for sequence in self._active:
            sequence.output_index = -1
            if sequence.prefilling:
                if prefill_budget == 0:
                    continue
                start = sequence.prefilled
                end = min(len(sequence.prompt_tokens), start + prefill_budget)
                for position in range(start, end):
                    add(sequence.prompt_tokens[position], position, sequence.seq_id, False)
                prefill_budget -= end - start
                sequence.prefilled = end
                if not sequence.prefilling:
                    batch.logits[count - 1] = True
                    sequence.output_index = count - 1
            else:
                position = len(sequence.prompt_tokens) + sequence.completion_tokens - 1
                add(sequence.last_token, position, sequence.seq_id, True)
                sequence.output_index = count - 1
        batch.n_tokens = count

        started = time.perf_counter()
        code = llama.llama_decode(self._context, batch)
        if code != 0:
            raise GoblinError(f"llama_decode failed with code {code}")
        elapsed = time.perf_counter() - started

        for sequence in list(self._active):
            if sequence.output_index >= 0:
                self._advance(sequence)
        remaining = [
            sequence.max_tokens
            - sequence.completion_tokens
            + math.ceil((len(sequence.prompt_tokens) - sequence.prefilled) / self._prefill_chunk)
            for sequence in self._active
        ]
        self._admission.record_step(elapsed, min(remaining, default=1))

    def _advance(self, sequence: _Sequence) -> None:
        """Sample ``sequence``'s next token and stream what it adds."""
        token = llama.llama_sampler_sample(sequence.sampler, self._context, sequence.output_index)
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
            self._engine._call_in_loop(
                self._observer.first_token, sequence.first_token_at - sequence.request.submitted_at
            )
        if llama.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        sequence.completion_tokens += 1
        sequence.last_token = token
        text = sequence.stop.feed(sequence.decoder.decode(self._piece(token)))
        if text:
            self._send(sequence.request, StreamEvent(text=text))
        if sequence.stop.matched:
            self._finish(sequence, "stop")
        elif sequence.completion_tokens >= sequence.max_tokens:
            self._finish(sequence, "length")

    def _piece(self, token: int) -> bytes:
        """The bytes of one token; control tokens give none."""
        size = llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False)
        if size < 0:
            self._piece_buffer = ctypes.create_string_buffer(-size)
            size = llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False)
        return self._piece_buffer.raw[:size]

    def _finish(self, sequence: _Sequence, reason: FinishReason | None, *, error: GoblinError | None = None) -> None:
        """End ``sequence``: free its KV sequence and sampler, then send the last text and the final event
        (or ``error``)."""
        request = sequence.request
        self._active.remove(sequence)
        llama.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        llama.llama_sampler_free(sequence.sampler)
        self._free_seq_ids.append(sequence.seq_id)
        # Released and reported before the last event goes out, so that a caller who has seen the end
        # finds the place free and the observer told.
        self._admission.release_active()
        self._report_finished(
            request,
            reason or "error",
            len(sequence.prompt_tokens),
            sequence.completion_tokens,
            sequence.admitted_at,
            sequence.first_token_at,
        )
        if error is not None:
            self._send(request, error)
        else:
            assert reason is not None
            tail = sequence.stop.feed(sequence.decoder.decode(b"", final=True)) + sequence.stop.flush()
            if tail:
                self._send(request, StreamEvent(text=tail))
            self._send(request, StreamEvent(finish_reason=reason, usage=sequence.usage()))

    # Talking to the event loop

    def _send(self, request: _Request, item: StreamEvent | BaseException) -> None:
        if request.cancelled:
            return  # nobody is listening
        try:
            request.loop.call_soon_threadsafe(request.events.put_nowait, item)
        except RuntimeError:  # the request's event loop is closed
            request.cancelled = True

    def _report_finished(
        self,
        request: _Request,
        outcome: FinishReason | Literal["error"],
        prompt_tokens: int,
        completion_tokens: int,
        admitted_at: float | None,
        first_token_at: float | None,
    ) -> None:
        now = time.perf_counter()
        stats = RequestStats(
            outcome=outcome,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            queued_seconds=(admitted_at if admitted_at is not None else now) - request.submitted_at,
            time_to_first_token=None if first_token_at is None else first_token_at - request.submitted_at,
            latency_seconds=now - request.submitted_at,
        )
        self._engine._call_in_loop(self._observer.request_finished, stats)

    def _stop_everything(self) -> None:
        """On shutdown: end running and waiting requests as cancelled, refuse the ones not yet accepted."""
        for sequence in list(self._active):
            self._finish(sequence, "cancelled")
        while self._waiting:
            waiting = self._waiting.popleft()
            self._admission.release_waiting()
            self._report_finished(waiting.request, "cancelled", len(waiting.prompt_tokens), 0, None, None)
            usage = Usage(prompt_tokens=len(waiting.prompt_tokens), completion_tokens=0)
            self._send(waiting.request, StreamEvent(finish_reason="cancelled", usage=usage))
        while True:
            try:
                command = self._inbox.get(block=False)
            except queue.Empty:
                break
            if isinstance(command, _Submit):
                self._admission.release_waiting()
                self._send(command.request, Unavailable("the local model is shutting down"))
            elif isinstance(command, _Call):
                command.result.set_exception(Unavailable("the local model is shutting down"))
        self._engine._call_in_loop(self._engine._report_queue)
