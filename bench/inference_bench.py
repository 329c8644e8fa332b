"""The chat path's cost: Goblin's whole stack against llama-cpp-python on the same model, all cores.

1. One stream: time to first token and decode tokens/s, llama-cpp-python called directly (in this
   process, decoding on every core) vs openai SDK -> gateway (HTTPS) -> router -> inference, as
   `goblin up` starts it (at most every core, stepping down while other processes need one:
   services/inference/engine/threads.py), the two taking turns run by run with the suite up throughout.
   Goal: >= 95 % of direct decode speed and < 15 ms added to TTFT.
2. Four concurrent streams: aggregate tokens/s through Goblin vs its own single-stream rate (goal:
   >= 1.5x) and vs `python -m llama_cpp.server` on the same model and cores (goal: ahead of it).

Goblin's decoding thread count (the goblin_inference_threads gauge) is sampled during each part.
Bounded: a fixed number of runs, each with max_tokens fixed; everything on 127.0.0.1.
Run: `make bench` or `python -m bench.inference_bench [--runs N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.results import median, write_section
from goblin_tools.suite import start_suite
from goblin_tools.supervisor import suite_decode_threads
from services.common.process import usable_cores
from services.inference.models import chat_model_path

WORK = Path(__file__).resolve().parent / ".work"
MESSAGES = [{"role": "user", "content": "Tell me a long story about a goblin who builds a clockwork machine."}]
MAX_TOKENS = 128
RUNS = 5
CONCURRENT = 4
CONCURRENT_RUNS = 3
# The most decoding threads `goblin up` gives the inference service (every core: see supervisor.py); the
# direct baseline decodes on as many, always.
THREADS = suite_decode_threads()
# Prompt processing on every core, on both sides (llama-cpp-python's default, and Goblin's).
BATCH_THREADS = usable_cores()
N_CTX = 2048


@dataclass
class StreamTiming:
    ttft_s: float
    tokens: int
    decode_s: float  # first token to last token

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 and self.tokens > 1 else float("nan")


def plain_cpu_kernels() -> None:
    """Load llama-cpp-python's models as Goblin's worker does, without llama.cpp's "extra" CPU buffer
    types: on CPUs with AMX they repack weights for kernels that segfault here (worker.py), and the
    comparison should be of the same kernels anyway."""
    import llama_cpp.llama_cpp as llama

    default = llama.llama_model_default_params
    if getattr(default, "plain_cpu", False):
        return

    def params():  # noqa: ANN202
        value = default()
        value.use_extra_bufts = False
        return value

    params.plain_cpu = True  # type: ignore[attr-defined]
    llama.llama_model_default_params = params


def direct_model(model: Path) -> Any:
    """llama-cpp-python's model in this process, decoding on every core, as the direct side uses it."""
    from llama_cpp import Llama

    plain_cpu_kernels()
    return Llama(
        model_path=str(model), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=BATCH_THREADS, verbose=False, seed=1
    )


def direct_once(llm: Any) -> StreamTiming:
    """One streamed answer from llama-cpp-python called directly."""
    # Goblin evaluates every prompt afresh (each request has its own sequence); without a reset,
    # llama-cpp-python would reuse the previous run's prompt and the TTFT would measure its cache.
    llm.reset()
    started = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in llm.create_chat_completion(messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    if first is None or last is None:
        return StreamTiming(float("nan"), 0, 0.0)
    return StreamTiming(first - started, tokens, last - first)


def openai_client(base_url: str, api_key: str, verify: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        http_client=httpx.AsyncClient(verify=verify, timeout=300),
        max_retries=0,
    )


async def stream_once(client: openai.AsyncOpenAI, model: str, *, usage: bool = False) -> StreamTiming:
    """One streamed answer. Tokens are counted one per content chunk, unless ``usage``: then the final
    usage chunk's completion_tokens (Goblin joins the tokens that piled up while the client was behind
    into one chunk, so its chunks are not tokens)."""
    started = time.perf_counter()
    first = last = None
    tokens = 0
    extra = {"stream_options": {"include_usage": True}} if usage else {}
    stream = await client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True, **extra
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
        if usage and chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if first is None:
        return StreamTiming(float("nan"), 0, 0.0)
    return StreamTiming(first - started, tokens, last - first)


async def single_streams(
    client: openai.AsyncOpenAI, model: str, llm: Any
) -> tuple[list[StreamTiming], list[StreamTiming]]:
    """RUNS single streams each way, direct and Goblin taking turns run by run (a warm-up of each first),
    so the host's drift (other virtual machines' steal time moves the direct rate by 25 % within minutes
    here) hits both alike: the direct timings and Goblin's."""
    direct_once(llm)
    await stream_once(client, model, usage=True)
    direct, goblin = [], []
    for _ in range(RUNS):
        direct.append(direct_once(llm))
        goblin.append(await stream_once(client, model, usage=True))
    return direct, goblin


async def concurrent_tps(client: openai.AsyncOpenAI, model: str, *, usage: bool = False) -> tuple[float, int]:
    """Aggregate delivered tokens/s of CONCURRENT streams (median over runs), and tokens of the last."""
    rates, tokens = [], 0
    for _ in range(CONCURRENT_RUNS):
        started = time.perf_counter()
        results = await asyncio.gather(
            *(stream_once(client, model, usage=usage) for _ in range(CONCURRENT)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        tokens = sum(r.tokens for r in results if isinstance(r, StreamTiming))
        rates.append(tokens / elapsed)
    return median(rates), tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `python -m llama_cpp.server` with the same plain CPU kernels as the direct run (plain_cpu_kernels).
SERVER = "import runpy, sys; from bench.inference_bench import plain_cpu_kernels; plain_cpu_kernels(); " \
    "sys.argv[0] = 'llama_cpp.server'; runpy.run_module('llama_cpp.server', run_name='__main__')"  # fmt: skip


def start_llama_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SERVER, "--model", str(model), "--n_threads", str(THREADS),
         "--n_threads_batch", str(BATCH_THREADS), "--n_ctx", str(N_CTX), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def llama_server_concurrent(model: Path) -> tuple[float, int]:
    port = free_port()
    process = start_llama_server(model, port)
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(600):
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/v1/models")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        client = openai_client(f"http://127.0.0.1:{port}/v1", "none", True)
        await stream_once(client, "local")
        return await concurrent_tps(client, "local")
    finally:
        process.terminate()
        process.wait(timeout=30)


class ThreadWatch:
    """Samples the inference service's goblin_inference_threads gauge while a part of the bench runs."""

    def __init__(self, metrics_url: str) -> None:
        self.metrics_url = metrics_url
        self.seen: list[int] = []

    async def _watch(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    for line in (await client.get(self.metrics_url)).text.splitlines():
                        if line.startswith("goblin_inference_threads "):
                            self.seen.append(int(float(line.split()[1])))
                await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def during(self):  # noqa: ANN201
        """Sample while the body runs; the samples of this body only are in ``seen`` after it."""
        self.seen = []
        task = asyncio.create_task(self._watch())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def summary(self) -> str:
        if not self.seen:
            return "not seen"
        share = sum(1 for n in self.seen if n == THREADS) / len(self.seen) * 100
        return f"{min(self.seen)}-{max(self.seen)} ({share:.0f} % of samples at {THREADS})"


async def goblin_stack(
    model: Path,
) -> tuple[list[StreamTiming], list[StreamTiming], tuple[float, int], str, str]:
    """Direct and Goblin's single streams taken in turns, Goblin's concurrent rate, and the thread counts
    seen during each part."""
    home = WORK / "inference"
    shutil.rmtree(home, ignore_errors=True)
    # The suite's own default maximum (every core) and adaptive threads, as `goblin up` runs them.
    suite = start_suite(home, GOBLIN_INFERENCE_N_CTX=str(N_CTX))
    try:
        suite.wait_ready()
        client = openai_client(f"{suite.gateway_url}/v1", suite.admin_key, suite.ssl_context())
        llm = direct_model(model)
        watch = ThreadWatch(suite.metrics_url("inference"))
        async with watch.during():
            direct, single = await single_streams(client, "local", llm)
        single_threads = watch.summary()
        del llm
        async with watch.during():
            concurrent = await concurrent_tps(client, "local", usage=True)
        concurrent_threads = watch.summary()
        await client.close()
        return direct, single, concurrent, single_threads, concurrent_threads
    finally:
        suite.stop()


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    global RUNS, CONCURRENT_RUNS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="single-stream runs per side (default %(default)s)")
    args = parser.parse_args()
    RUNS = max(1, args.runs)
    CONCURRENT_RUNS = max(1, min(CONCURRENT_RUNS, args.runs))
    model = chat_model_path(os.environ.get("GOBLIN_MODEL_PATH"))
    load_before = load_average()
    direct, stack, (goblin_tps, goblin_tokens), single_threads, concurrent_threads = asyncio.run(goblin_stack(model))
    server_tps, server_tokens = asyncio.run(llama_server_concurrent(model))
    load_after = load_average()

    direct_tps = median([t.decode_tps for t in direct])
    stack_tps = median([t.decode_tps for t in stack])
    direct_ttft = median([t.ttft_s for t in direct]) * 1000
    stack_ttft = median([t.ttft_s for t in stack]) * 1000
    decode_ratio, ttft_added = stack_tps / direct_tps * 100, stack_ttft - direct_ttft
    body = f"""
Model {model.name}, n_ctx {N_CTX}, {BATCH_THREADS} prompt threads on both sides; llama-cpp-python decodes on
{THREADS} thread(s) always, Goblin on at most {THREADS} (what `goblin up` gives inference here: every core,
fewer while other processes need one). Both use llama.cpp's plain CPU kernels (no AMX repacking).
Temperature 0, max_tokens {MAX_TOKENS}, medians of {RUNS} runs of each after a warm-up, direct and Goblin
taking turns run by run (the suite up and idle during the direct runs); llama-cpp-python's prompt cache is
reset before each direct run, as Goblin evaluates every prompt afresh. Load average (1/5/15 min)
before: {load_before}, after: {load_after}; the client and the whole suite share these cores.

Goblin's decoding threads (goblin_inference_threads, sampled every 250 ms): one stream
{single_threads}; {CONCURRENT} streams {concurrent_threads}.

| one stream | decode tokens/s | time to first token |
| --- | --- | --- |
| llama-cpp-python, called directly | {direct_tps:.1f} | {direct_ttft:.1f} ms |
| Goblin: openai SDK -> gateway (HTTPS) -> router -> inference | {stack_tps:.1f} | {stack_ttft:.1f} ms |
| vs direct | **{decode_ratio:.1f} %** (goal >= 95 %) | **{ttft_added:+.1f} ms** (goal < 15 ms) |

| {CONCURRENT} concurrent streams | aggregate delivered tokens/s | tokens delivered (last run) |
| --- | --- | --- |
| `python -m llama_cpp.server` | {server_tps:.1f} | {server_tokens} |
| Goblin (batched decoding) | {goblin_tps:.1f} | {goblin_tokens} |
| ratio | **{goblin_tps / server_tps:.2f}x** (goal > 1) | |
| Goblin, vs its own single stream ({stack_tps:.1f} tokens/s) | **{goblin_tps / stack_tps:.2f}x** (goal >= 1.5x) | |
"""
    write_section("Inference: the chat path vs llama-cpp-python", body, "make bench (python -m bench.inference_bench)")
    print(body)


if __name__ == "__main__":
    main()
