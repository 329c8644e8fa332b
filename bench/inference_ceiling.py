"""The physical ceilings of the local model on this machine, in process, with llama.cpp's low-level API.

(a) one sequence's decode loop with llama.cpp's own greedy sampler: tokens/s;
(b) four sequences in one llama_batch per llama_decode, each sampled greedily: aggregate tokens/s, and its
    ratio to (a), the most that four concurrent streams can gain over one on this CPU whatever the
    serving code does around llama_decode.

Both on a context shaped as Goblin's worker makes it (n_seq_max 4, one KV stream per sequence, n_ctx
2048 each, plain CPU kernels), on the decoding threads `goblin up` gives inference; (a) also on a
one-sequence context as llama-cpp-python makes it, so the cost of the multi-sequence context shows.
Prompt prefill is outside the timed loop: decode steps only. The variants alternate, medians of --runs.

With --engine, Goblin's own ChatEngine (services/inference/engine, no gRPC; fixed threads, so that the
adaptive policy's reaction to other sessions does not blur the comparison) runs the same prompt beside
them: (c) one stream, (d) four concurrent streams, tokens/s from each stream's first token to its last,
and for every variant the milliseconds per step outside llama_decode (the Python around each step).

Run: `python -m bench.inference_ceiling [--runs N] [--tokens N]`. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as llama

from goblin_tools.supervisor import suite_decode_threads
from services.common.chat import SamplingParams
from services.inference.engine import ChatEngine
from services.inference.engine.llama_log import log_from_llama
from services.inference.models import chat_model_path

PROMPT = (
    "<|im_start|>user\nTell me a long story about a goblin who builds a clockwork machine.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
N_CTX = 2048
SEQUENCES = 4


def load_model(path: Path) -> Any:
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.use_extra_bufts = False  # plain CPU kernels, as Goblin's worker (see worker.py)
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SystemExit(f"could not load {path}")
    return model


def new_context(model: Any, n_seq: int, threads: int) -> Any:
    params = llama.llama_context_default_params()
    params.n_ctx = N_CTX * n_seq
    params.n_seq_max = n_seq
    params.n_batch = params.n_ubatch = 256 + n_seq
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    context = llama.llama_init_from_model(model, params)
    if not context:
        raise SystemExit("could not create a context")
    return context


def tokenize(vocab: Any, text: str) -> list[int]:
    data = text.encode()
    tokens = (llama.llama_token * (len(data) + 8))()
    count = llama.llama_tokenize(vocab, data, len(data), tokens, len(tokens), True, True)
    return list(tokens[:count])


def decode_rate(context: Any, vocab: Any, prompt: list[int], n_seq: int, n_tokens: int) -> float:
    """Aggregate tokens/s of ``n_seq`` sequences decoding ``n_tokens`` each in lockstep (one batch per
    step, llama.cpp's greedy sampler per sequence); the prompts' prefill is not timed."""
    memory = llama.llama_get_memory(context)
    llama.llama_memory_clear(memory, True)
    batch = llama.llama_batch_init(256 + n_seq, 0, 1)
    samplers = [llama.llama_sampler_init_greedy() for _ in range(n_seq)]
    try:

        def fill(items: list[tuple[int, int, int, bool]]) -> None:
            for i, (token, pos, seq, logits) in enumerate(items):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits
            batch.n_tokens = len(items)

        outputs = []
        for seq in range(n_seq):  # prefill each prompt alone, as Goblin's chunked prefill would
            fill([(t, p, seq, p == len(prompt) - 1) for p, t in enumerate(prompt)])
            if llama.llama_decode(context, batch) != 0:
                raise SystemExit("prefill failed")
            outputs.append(llama.llama_sampler_sample(samplers[seq], context, -1))
        position = len(prompt)
        started = time.perf_counter()
        for _ in range(n_tokens):
            fill([(outputs[seq], position, seq, True) for seq in range(n_seq)])
            if llama.llama_decode(context, batch) != 0:
                raise SystemExit("decode failed")
            outputs = [llama.llama_sampler_sample(samplers[seq], context, seq) for seq in range(n_seq)]
            position += 1
        return n_seq * n_tokens / (time.perf_counter() - started)
    finally:
        for sampler in samplers:
            llama.llama_sampler_free(sampler)
        llama.llama_batch_free(batch)


class DecodeClock:
    """Every llama_decode call while installed: its wall-clock start and end, and the calling thread's
    CPU clock at both (the engine's worker calls it through the module, so a wrapper there sees every
    step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, float, float]] = []
        self._original = llama.llama_decode

    def __enter__(self) -> DecodeClock:
        original = self._original

        def timed(context: Any, batch: Any) -> int:
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return original(context, batch)
            finally:
                self.calls.append((started, time.perf_counter(), cpu_started, time.thread_time()))

        llama.llama_decode = timed
        return self

    def __exit__(self, *exc: object) -> None:
        llama.llama_decode = self._original

    def outside_ms(self, start: float, end: float) -> tuple[float, float]:
        """Mean milliseconds per step between one llama_decode's end and the next one's start, for the
        steps that begin in [start, end): wall clock (what the stream waits, GIL hand-overs included)
        and the worker thread's CPU (sampling, detokenizing, stops, hand-offs; what preemption by other
        processes does not inflate)."""
        steps = [call for call in self.calls if start <= call[0] < end]
        if len(steps) < 2:
            return float("nan"), float("nan")
        gaps = list(zip(steps, steps[1:], strict=False))
        wall = sum(after[0] - before[1] for before, after in gaps) / len(gaps) * 1000
        cpu = sum(after[2] - before[3] for before, after in gaps) / len(gaps) * 1000
        return wall, cpu


async def engine_rate(engine: ChatEngine, n_seq: int, n_tokens: int) -> tuple[float, tuple[float, float]]:
    """Aggregate tokens/s of ``n_seq`` concurrent streams through ``engine`` (each from its first token
    to its last, so prefill is outside as in :func:`decode_rate`), and the engine's milliseconds per
    step outside llama_decode (wall, worker CPU)."""
    params = SamplingParams(max_tokens=n_tokens + 1, temperature=0)
    marks: list[tuple[float, float, int]] = []

    async def one() -> None:
        first = last = 0.0
        tokens = 0
        async for delta in engine.stream_complete(PROMPT, params):
            now = time.perf_counter()
            if delta.usage is not None:
                tokens = delta.usage.completion_tokens
            first, last = first or now, now
        marks.append((first, last, tokens))

    with DecodeClock() as clock:
        await asyncio.gather(*(one() for _ in range(n_seq)))
    start, end = min(m[0] for m in marks), max(m[1] for m in marks)
    tokens = sum(m[2] - 1 for m in marks)
    return tokens / (end - start), clock.outside_ms(start, end)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="alternated runs of each variant (default %(default)s)")
    parser.add_argument("--tokens", type=int, default=128, help="decode steps per run (default %(default)s)")
    parser.add_argument("--threads", type=int, default=suite_decode_threads(), help="decoding threads")
    parser.add_argument("--engine", action="store_true", help="also Goblin's ChatEngine, one and four streams")
    args = parser.parse_args()
    llama.llama_log_set(log_from_llama, ctypes.c_void_p(0))  # llama.cpp's chatter into logging, not stderr
    model = load_model(chat_model_path(os.environ.get("GOBLIN_MODEL_PATH")))
    vocab = llama.llama_model_get_vocab(model)
    prompt = tokenize(vocab, PROMPT)
    one_ctx = new_context(model, 1, args.threads)
    multi_ctx = new_context(model, SEQUENCES, args.threads)
    variants: dict[str, Any] = {
        "(a) 1 sequence, 1-sequence context (llama-cpp-python's)": (one_ctx, 1),
        "(a') 1 sequence, Goblin's 4-sequence context": (multi_ctx, 1),
        f"(b) {SEQUENCES} sequences in one batch, Goblin's context": (multi_ctx, SEQUENCES),
    }
    loop = asyncio.new_event_loop()
    engine = None
    if args.engine:
        engine = ChatEngine(
            chat_model_path(os.environ.get("GOBLIN_MODEL_PATH")),
            n_ctx=N_CTX,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            adaptive_threads=False,
        )
        loop.run_until_complete(engine.start())
        variants["(c) Goblin's ChatEngine, 1 stream"] = (engine, 1)
        variants[f"(d) Goblin's ChatEngine, {SEQUENCES} streams"] = (engine, SEQUENCES)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    outside_ms: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}

    def run(name: str, n_tokens: int) -> None:
        target, n_seq = variants[name]
        if isinstance(target, ChatEngine):
            rate, outside = loop.run_until_complete(engine_rate(target, n_seq, n_tokens))
            outside_ms[name].append(outside)
        else:
            with DecodeClock() as clock:
                rate = decode_rate(target, vocab, prompt, n_seq, n_tokens)
            outside_ms[name].append(clock.outside_ms(clock.calls[-n_tokens][0], math.inf))
        rates[name].append(rate)

    load_before = load_average()
    for name in variants:  # warm-up
        run(name, 16)
    rates = {name: [] for name in variants}
    outside_ms = {name: [] for name in variants}
    for _ in range(args.runs):
        for name in variants:
            run(name, args.tokens)
    load_after = load_average()
    if engine is not None:
        loop.run_until_complete(engine.close())
    loop.close()
    print(
        f"model: {chat_model_path(os.environ.get('GOBLIN_MODEL_PATH')).name}, {args.threads} decoding threads, "
        f"{args.tokens} greedy steps per run, medians of {args.runs} alternated runs"
    )
    print(f"load average before: {load_before}, after: {load_after} (shared machine: the other sessions' load)")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        runs = ", ".join(f"{v:.1f}" for v in rates[name])
        share = ""
        if outside_ms[name]:
            wall = statistics.median(w for w, _ in outside_ms[name])
            cpu = statistics.median(c for _, c in outside_ms[name])
            share = f", {wall:.2f} ms/step outside llama_decode ({cpu:.2f} ms of worker CPU)"
        print(f"{name}: {value:.1f} tok/s{share}  [{runs}]")
    names = list(variants)
    a, a_multi, b = medians[names[0]], medians[names[1]], medians[names[2]]
    print(f"ceiling of four streams over one: (b)/(a) = {b / a:.2f}x, (b)/(a') = {b / a_multi:.2f}x")
    if engine is not None:
        c, d = medians[names[3]], medians[names[4]]
        print(
            f"engine vs ceiling: (c)/(a) = {c / a * 100:.0f} %, (d)/(b) = {d / b * 100:.0f} %, (d)/(c) = {d / c:.2f}x"
        )
    llama.llama_free(one_ctx)
    llama.llama_free(multi_ctx)
    llama.llama_model_free(model)


if __name__ == "__main__":
    main()
