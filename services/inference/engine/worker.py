"""The worker thread: the only code that calls llama.cpp.

It owns the model, the context and the batch, which are not thread-safe. Between decoding steps it
takes commands from its inbox (new requests, cancellations, calls such as tokenizing), gives free
sequences to the oldest waiting requests, then runs one ``llama_decode`` over every running sequence
and samples each with its own sampler chain, streaming text back to the event loop.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import queue
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import llama_cpp.llama_cpp as llama

from services.common.chat import Usage
from services.common.errors import GoblinError, InvalidArgument, Unavailable
from services.inference.engine.admission import fit_to_context
from services.inference.engine.commands import Call, Cancel, LoadedModel, Output, Request, Submit
from services.inference.engine.llama_log import log_from_llama
from services.inference.engine.observer import FinishReason, RequestStats
from services.inference.engine.outbox import Outbox
from services.inference.engine.sampling import TokenSampler, check_grammar, token_logprob
from services.inference.engine.stops import StopMatcher
from services.inference.engine.threads import AdaptiveThreads, ThreadPolicy

if TYPE_CHECKING:
    from services.inference.engine.chat_engine import ChatEngine

logger = logging.getLogger(__name__)

# For GGUF files without a chat template: ChatML, the format most open instruct models use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(eq=False)
class _Waiting:
    """A request the worker has tokenized and accepted, waiting for a sequence."""

    request: Request
    prompt_tokens: list[int]
    max_tokens: int


@dataclass(eq=False)
class _Sequence:
    """A request that holds a KV-cache sequence; known to the worker thread only."""

    request: Request
    seq_id: int
    prompt_tokens: list[int]
    max_tokens: int
    sampler: TokenSampler
    admitted_at: float
    stop: StopMatcher
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


class Worker:
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
        self._outbox = Outbox()
        self._active: list[_Sequence] = []
        self._free_seq_ids = list(range(engine.max_sequences - 1, -1, -1))
        self._piece_buffer = ctypes.create_string_buffer(64)
        self._model: Any = None
        self._context: Any = None
        self._memory: Any = None
        self._vocab: Any = None
        self._n_vocab = 0
        self._batch: Any = None
        # Read by the event loop (an int: one atomic store); changed only here, between decoding steps.
        self.decode_threads = engine.n_threads
        self._threads: AdaptiveThreads | None = None
        if engine.adaptive_threads and engine.min_threads < engine.n_threads:
            policy = ThreadPolicy(engine.n_threads, engine.min_threads)
            self._threads = AdaptiveThreads(policy, batch_threads=engine.n_threads_batch)

    def run(self, ready: Future[LoadedModel]) -> None:
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
                self._outbox.flush()  # before the inbox may block: nothing waits behind a sleeping worker
        except BaseException:
            logger.exception("the llama.cpp worker stopped unexpectedly")
            raise
        finally:
            self._stop_everything()
            self._outbox.flush()
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

    def _load(self) -> LoadedModel:
        llama.llama_log_set(log_from_llama, ctypes.c_void_p(0))
        llama.llama_backend_init()
        engine = self._engine
        params = llama.llama_model_default_params()
        # No "extra" CPU buffer types: on CPUs with AMX (Xeon Sapphire Rapids and later) llama.cpp then
        # repacks weights for its AMX kernels, and ggml_backend_amx_mul_mat segfaults under our batched
        # multi-sequence decoding (seen with 0.3.36 and the default Q4_1 model, not with one sequence).
        # The plain CPU kernels are what every other machine runs anyway.
        params.use_extra_bufts = False
        model = llama.llama_model_load_from_file(str(engine.model_path).encode(), params)
        if not model:
            raise RuntimeError(f"llama.cpp could not load {engine.model_path} (is it a GGUF model?)")
        self._model = model
        self._vocab = llama.llama_model_get_vocab(model)
        self._n_vocab = llama.llama_vocab_n_tokens(self._vocab)
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
        return LoadedModel(
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
            if isinstance(command, Submit):
                self._accept(command.request)
            elif isinstance(command, Cancel):
                self._cancel(command.request)
            elif isinstance(command, Call):
                self._run_call(command)
            else:
                return False

    def _accept(self, request: Request) -> None:
        """Tokenize and check a new request, then queue it (or answer it with an error)."""
        if request.cancelled:
            self._admission.release_waiting()
            self._engine._call_in_loop(self._engine._report_queue)
            return
        try:
            tokens = self.tokenize(request.prompt, request.add_special, True)
            max_tokens = fit_to_context(len(tokens), request.params.max_tokens, self._n_ctx)
            self._check_shaping(request)
        except GoblinError as exc:
            self._admission.release_waiting()
            self._engine._call_in_loop(self._engine._report_queue)
            self._send(request, exc)
            return
        self._waiting.append(_Waiting(request=request, prompt_tokens=tokens, max_tokens=max_tokens))

    def _check_shaping(self, request: Request) -> None:
        """InvalidArgument for a grammar llama.cpp refuses or a logit_bias naming a token not in the vocabulary."""
        shaping = request.shaping
        if shaping.constraint is not None:
            check_grammar(self._vocab, shaping.constraint)
        for token in shaping.logit_bias:
            if not 0 <= token < self._n_vocab:
                raise InvalidArgument(f"logit_bias: token {token} is not in the vocabulary (0-{self._n_vocab - 1})")

    def _cancel(self, request: Request) -> None:
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
    def _run_call(call: Call) -> None:
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
            request = waiting.request
            # Stop strings shape content; a forced tool call has none, and cutting it would break it.
            constraint = request.shaping.constraint
            stops = () if constraint is not None and constraint.is_tool_call else request.params.stop
            self._active.append(
                _Sequence(
                    request=waiting.request,
                    seq_id=seq_id,
                    prompt_tokens=waiting.prompt_tokens,
                    max_tokens=waiting.max_tokens,
                    sampler=TokenSampler(self._vocab, self._n_vocab, request.params, request.shaping),
                    admitted_at=time.perf_counter(),
                    stop=StopMatcher(stops),
                    decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
                )
            )
            self._admission.admit()
            self._engine._call_in_loop(self._engine._report_queue)

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
        self._adapt_threads()

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

    def _adapt_threads(self) -> None:
        """Before a step: decode on as many threads as the policy allows now (see :mod:`.threads`)."""
        change = self._threads.poll() if self._threads is not None else None
        if change is not None:
            llama.llama_set_n_threads(self._context, *change)  # from the next llama_decode on
            self.decode_threads = change[0]
            self._engine._call_in_loop(self._observer.threads_changed, change[0])

    def _advance(self, sequence: _Sequence) -> None:
        """Sample ``sequence``'s next token and stream what it adds."""
        token, logprobs = sequence.sampler.sample(self._context, sequence.output_index)
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
        top = sequence.request.shaping.top_logprobs
        if logprobs is not None and top is not None:
            logprob = token_logprob(logprobs, token, top, self._text_of)
            self._send(sequence.request, Output(text=text, logprobs=(logprob,)))
        elif text:
            self._send(sequence.request, Output(text=text))
        if sequence.stop.matched:
            self._finish(sequence, "stop")
        elif sequence.completion_tokens >= sequence.max_tokens:
            self._finish(sequence, "length")

    def _text_of(self, token: int) -> str:
        return self._piece(token).decode("utf-8", errors="replace")

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
        sequence.sampler.free()
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
                self._send(request, Output(text=tail))
            self._send(request, Output(finish_reason=reason, usage=sequence.usage()))

    # Talking to the event loop

    def _send(self, request: Request, item: Output | BaseException) -> None:
        self._outbox.send(request, item)  # delivered after this step, with every other stream's

    def _report_finished(
        self,
        request: Request,
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
            self._send(waiting.request, Output(finish_reason="cancelled", usage=usage))
        while True:
            try:
                command = self._inbox.get(block=False)
            except queue.Empty:
                break
            if isinstance(command, Submit):
                self._admission.release_waiting()
                self._send(command.request, Unavailable("the local model is shutting down"))
            elif isinstance(command, Call):
                command.result.set_exception(Unavailable("the local model is shutting down"))
        self._engine._call_in_loop(self._engine._report_queue)
