"""A sequence's :class:`TokenSampler` picks exactly the tokens llama.cpp's own sampler chain picks.

Greedy sampling without a grammar skips the chain (an argmax over the row in numpy). Over the same
decoded logits of the real default model, a TokenSampler and a twin chain sampled through
``llama_sampler_sample`` must choose the same token at every step: greedy, greedy with a logit bias,
seeded, and under a grammar.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import llama_cpp.llama_cpp as llama
import numpy as np
import pytest

from services.common.chat import SamplingParams
from services.inference.engine.grammar import Constraint
from services.inference.engine.llama_log import log_from_llama
from services.inference.engine.sampling import Shaping, TokenSampler, _new_chain
from services.inference.models import chat_model_path

pytestmark = pytest.mark.unit

PROMPT = b"<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"
STEPS = 24
# A tiny grammar that still leaves the model choices: a lowercase word or two.
WORDS = Constraint(gbnf='root ::= [a-z]+ (" " [a-z]+)?', kind="json")


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[Any, Any, Any]]:
    llama.llama_log_set(log_from_llama, ctypes.c_void_p(0))
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.use_extra_bufts = False
    loaded = llama.llama_model_load_from_file(str(chat_model_path()).encode(), params)
    assert loaded
    context_params = llama.llama_context_default_params()
    context_params.n_ctx = 512
    context_params.n_batch = context_params.n_ubatch = 128
    context_params.n_threads = context_params.n_threads_batch = 2
    context = llama.llama_init_from_model(loaded, context_params)
    assert context
    yield loaded, llama.llama_model_get_vocab(loaded), context
    llama.llama_free(context)
    llama.llama_model_free(loaded)


def decode(context: Any, tokens: list[int]) -> None:
    array = (llama.llama_token * len(tokens))(*tokens)  # kept alive across the decode: the batch points into it
    assert llama.llama_decode(context, llama.llama_batch_get_one(array, len(tokens))) == 0


@pytest.mark.parametrize(
    ("params", "constraint", "bias"),
    [
        (SamplingParams(temperature=0), None, {}),
        (SamplingParams(temperature=0), None, {198: -100.0, 30: 5.0}),
        (SamplingParams(temperature=0.9, top_p=0.9, seed=7), None, {}),
        (SamplingParams(temperature=0), WORDS, {}),
        (SamplingParams(temperature=0.8, seed=3), WORDS, {}),
    ],
    ids=["greedy", "greedy-bias", "top-p-seeded", "greedy-grammar", "seeded-grammar"],
)
def test_a_sequence_samples_what_llama_cpp_samples(
    model: tuple[Any, Any, Any], params: SamplingParams, constraint: Constraint | None, bias: dict[int, float]
) -> None:
    _, vocab, context = model
    n_vocab = llama.llama_vocab_n_tokens(vocab)
    llama.llama_memory_clear(llama.llama_get_memory(context), True)
    data = PROMPT
    prompt = (llama.llama_token * (len(data) + 8))()
    count = llama.llama_tokenize(vocab, data, len(data), prompt, len(prompt), True, True)
    shaping = Shaping(constraint=constraint, logit_bias=bias)
    assert TokenSampler(vocab, n_vocab, params, shaping).greedy == (params.temperature == 0 and constraint is None)
    reference, ours = _new_chain(vocab, params, constraint), TokenSampler(vocab, n_vocab, params, shaping)
    try:
        decode(context, list(prompt[:count]))
        chosen = []
        for step in range(STEPS):
            row = np.ctypeslib.as_array(
                ctypes.cast(llama.llama_get_logits_ith(context, -1), ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
            )
            original = row.copy()
            # The reference sees the same shaped row the TokenSampler makes in place (bias added).
            token, _ = ours.sample(context, -1)
            shaped = row.copy()
            row[:] = original
            for token_id, value in bias.items():
                row[token_id] += value
            assert np.array_equal(row, shaped)
            expected = llama.llama_sampler_sample(reference, context, -1)
            assert token == expected, f"step {step}"
            chosen.append(token)
            if llama.llama_vocab_is_eog(vocab, token):
                break
            decode(context, [token])
        assert chosen
    finally:
        llama.llama_sampler_free(reference)
        ours.free()
