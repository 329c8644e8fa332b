"""How one sequence picks its next token: the sampler chain, and what is done to the logits first.

Each running sequence has its own :class:`TokenSampler`, so one batch can hold a sequence under a JSON
grammar beside sequences sampling freely; llama.cpp samples each from its own row of the batch's logits.

Before the chain runs, the sequence's row of logits is adjusted in place (llama.cpp's samplers read that
same buffer): ``logit_bias`` added, then OpenAI's presence and frequency penalties, ``logit -=
presence * (count > 0) + frequency * count`` over the tokens generated so far. The chain is then the
grammar (when the request has one), then greedy at temperature 0, else top-p, temperature and a seeded
draw. Per-token logprobs are the model's own distribution (the log-softmax of the raw logits, before
bias, penalties or grammar), as OpenAI reports them.

Greedy without a grammar skips the chain: the token is the first index of the row's largest logit,
which is what llama.cpp's greedy sampler selects, found by numpy over the row in place (about 15 us of
CPU here) where ``llama_sampler_sample`` first copies the whole vocabulary into a candidates array
(49k entries, about 210 us), on every token of every sequence.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import llama_cpp.llama_cpp as llama
import numpy as np

from services.common.chat import SamplingParams
from services.common.chat_content import TokenLogprob
from services.common.errors import InvalidArgument
from services.inference.engine.grammar import Constraint

# What a request that leaves temperature or top_p unset samples with.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95


@dataclass(frozen=True)
class Shaping:
    """What a request asks of sampling beyond :class:`SamplingParams`'s basics, in the engine's terms
    (token ids, not strings). The default shapes nothing."""

    constraint: Constraint | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


NO_SHAPING = Shaping()


def check_grammar(vocab: Any, constraint: Constraint) -> None:
    """InvalidArgument unless llama.cpp accepts ``constraint``'s grammar (on the worker thread)."""
    sampler = llama.llama_sampler_init_grammar(vocab, constraint.gbnf.encode(), b"root")
    if not sampler:
        raise InvalidArgument("the local model could not build a grammar for this schema")
    llama.llama_sampler_free(sampler)


class TokenSampler:
    """One sequence's sampling state: its llama.cpp sampler chain and its token counts."""

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams, shaping: Shaping) -> None:
        self._n_vocab = n_vocab
        self._shaping = shaping
        self._counts = np.zeros(n_vocab, dtype=np.float32) if shaping.penalised else None
        self._bias_ids = np.fromiter(shaping.logit_bias.keys(), dtype=np.int64, count=len(shaping.logit_bias))
        self._bias_values = np.fromiter(shaping.logit_bias.values(), dtype=np.float32, count=len(shaping.logit_bias))
        # Greedy and free: the chain would only take the row's argmax (and its accept does nothing).
        self.greedy = params.temperature == 0.0 and shaping.constraint is None
        self.chain = _new_chain(vocab, params, shaping.constraint)

    def sample(self, context: Any, output_index: int) -> tuple[int, np.ndarray | None]:
        """The next token, and the row's log-probabilities when the request wants logprobs."""
        logits = None
        logprobs = None
        if self.greedy or self._shaping.top_logprobs is not None or self._counts is not None or self._bias_ids.size:
            pointer = llama.llama_get_logits_ith(context, output_index)
            if not pointer:
                raise RuntimeError(f"llama.cpp has no logits for output {output_index}")
            logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))
        if logits is not None and self._shaping.top_logprobs is not None:
            logprobs = _log_softmax(logits)
        if logits is not None:
            shape_logits(logits, self._bias_ids, self._bias_values, self._counts, self._shaping)
        if self.greedy:
            assert logits is not None
            token = int(logits.argmax())  # the first of equal maxima, as llama.cpp's greedy sampler
        else:
            token = llama.llama_sampler_sample(self.chain, context, output_index)
        if self._counts is not None and 0 <= token < self._n_vocab:
            self._counts[token] += 1
        return token, logprobs

    def free(self) -> None:
        llama.llama_sampler_free(self.chain)


def shape_logits(
    logits: np.ndarray, bias_ids: np.ndarray, bias_values: np.ndarray, counts: np.ndarray | None, shaping: Shaping
) -> None:
    """Add the logit bias, then subtract OpenAI's penalties (``counts``: how often each token was
    generated so far), in place."""
    if bias_ids.size:
        logits[bias_ids] += bias_values
    if counts is not None:
        logits -= shaping.frequency_penalty * counts
        logits -= shaping.presence_penalty * (counts > 0)


def token_logprob(logprobs: np.ndarray, token: int, top: int, text_of: Any) -> TokenLogprob:
    """The chosen token's logprob and the ``top`` most likely alternatives, named by ``text_of(id)``."""
    alternatives: tuple[tuple[str, float], ...] = ()
    if top:
        ids = np.argpartition(logprobs, -top)[-top:]
        ids = ids[np.argsort(logprobs[ids])[::-1]]
        alternatives = tuple((text_of(int(i)), float(logprobs[i])) for i in ids)
    return TokenLogprob(token=text_of(token), logprob=float(logprobs[token]), top=alternatives)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(logits.max())
    return shifted - np.log(np.exp(shifted).sum())


def _new_chain(vocab: Any, params: SamplingParams, constraint: Constraint | None) -> Any:
    """A sampler chain for ``params``: the grammar first, then greedy at temperature 0, else top-p,
    temperature, then a draw seeded by ``params.seed`` (a fresh seed when it is None)."""
    temperature = DEFAULT_TEMPERATURE if params.temperature is None else params.temperature
    top_p = DEFAULT_TOP_P if params.top_p is None else params.top_p
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    if constraint is not None:
        grammar = llama.llama_sampler_init_grammar(vocab, constraint.gbnf.encode(), b"root")
        if not grammar:  # checked when the request was accepted, so this is not the client's doing
            llama.llama_sampler_free(chain)
            raise RuntimeError("llama.cpp refused a grammar it accepted before")
        llama.llama_sampler_chain_add(chain, grammar)
    if temperature == 0.0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        return chain
    # LLAMA_DEFAULT_SEED asks llama.cpp for a random seed, so a caller's seed is kept below it.
    seed = llama.LLAMA_DEFAULT_SEED if params.seed is None else params.seed % llama.LLAMA_DEFAULT_SEED
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(top_p, 1))
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(temperature))
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
    return chain
