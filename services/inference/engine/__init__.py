"""The local chat model: llama.cpp behind an asyncio API, with continuous batching.

How it works:

- One worker thread owns the llama.cpp model and context, which are not thread-safe, and makes every
  llama.cpp call. The event loop hands it commands through a thread-safe inbox and gets events back
  through ``loop.call_soon_threadsafe``, all of a step's events in one callback (:mod:`.outbox`); nothing
  on the event loop waits for the model. A stream whose consumer falls behind gets the tokens that piled
  up as one delta.
- Up to ``max_sequences`` requests decode together. Each is its own sequence (``seq_id``) in the KV cache;
  every step puts each running sequence's newest token (or the next chunk of its prompt) into one
  ``llama_batch`` and runs one ``llama_decode``, then samples every sequence with its own sampler chain
  (a sequence under a JSON or tool-call grammar sits beside free ones).
  Concurrent requests share the cores instead of waiting for each other. What a step over four
  sequences costs against a step over one depends on the weights' type: with the default Q4_1 model
  about three times as much (four streams reach 1.2-1.3x one stream's tokens/s), with Q4_0 or Q8_0, which
  llama.cpp's batched x86 kernels cover, about twice (2.1-2.5x): ``python -m bench.inference_ceiling``.
- Between steps, finished and cancelled sequences leave and the oldest waiting requests take their
  places (FIFO). A stream whose consumer goes away is dropped before the next step, so it stops costing
  compute within one token.
- At most ``max_queue`` requests wait for a place; one more gets :class:`QueueFull` at once, with an
  estimate of when a place frees. The backlog is never unbounded.
- Each sequence has its own KV stream of ``n_ctx`` tokens, so a request admitted with
  prompt + max_tokens <= ``n_ctx`` always fits whatever the others do, and its output does not depend on
  which requests share its batches: the same seed gives the same answer on an idle or a busy engine.

Modules: :mod:`.chat_engine` (the asyncio-facing :class:`ChatEngine`), :mod:`.worker` (the thread that
owns llama.cpp: scheduling, decoding, sampling), :mod:`.admission` (queue limits and retry-after),
:mod:`.stops` (stop strings in streamed text), :mod:`.commands` (what crosses between the two threads),
:mod:`.outbox` (the worker's events, handed to the event loop once per step),
:mod:`.observer` (stats and metric hooks), :mod:`.sampling` (each sequence's sampler chain, logit bias,
penalties, logprobs), :mod:`.grammar` (grammars for response formats and forced tool calls),
:mod:`.toolcalls` (a forced call as streamed tool-call deltas), :mod:`.prompt` (chat-template turns),
:mod:`.threads` (how many threads decode), :mod:`.llama_log` (llama.cpp's log lines). Requests, answers
and parameters are the shared chat types of :mod:`services.common.chat`.
"""

from services.inference.engine.admission import QueueFull
from services.inference.engine.chat_engine import ChatEngine
from services.inference.engine.observer import EngineObserver, EngineStats, FinishReason, RequestStats
from services.inference.engine.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from services.inference.engine.worker import CHATML_TEMPLATE

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "ChatEngine",
    "EngineObserver",
    "EngineStats",
    "FinishReason",
    "QueueFull",
    "RequestStats",
]
