"""ChatEngine on the real default model (SmolLM2-135M) and real llama.cpp.

The model's text is unreliable, so these tests check shape, token counts, streaming, queueing,
cancellation and batching; they compare outputs only with other outputs of the same model under the
same greedy or seeded settings, never with expected wording.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams
from services.common.errors import InvalidArgument, Unavailable
from services.inference.engine import ChatEngine, EngineObserver, QueueFull, RequestStats
from services.inference.models import CHAT_MODEL_ENV, ModelNotFound, chat_model_path

pytestmark = pytest.mark.unit

MODEL = chat_model_path()
QUESTION = [Message(role="user", content="What is the capital of France?")]
GREEDY = SamplingParams(max_tokens=12, temperature=0)
# Greedy decoding continues this list for hundreds of tokens: a stream of it does not end on its own.
COUNTING = "1, 2, 3, 4, 5,"
LONG = SamplingParams(max_tokens=400, temperature=0)


class Recorder(EngineObserver):
    """Keeps every observer call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def model_loaded(self, loaded: bool) -> None:
        self.calls.append(("loaded", loaded))

    def queue_changed(self, length: int, capacity: int) -> None:
        self.calls.append(("queue", (length, capacity)))

    def first_token(self, seconds: float) -> None:
        self.calls.append(("first_token", seconds))

    def request_finished(self, stats: RequestStats) -> None:
        self.calls.append(("finished", stats))

    @property
    def finished(self) -> list[RequestStats]:
        return [value for name, value in self.calls if name == "finished"]  # type: ignore[misc]


@pytest.fixture(scope="module")
def reference() -> Llama:
    """llama-cpp-python's own tokenizer for the same GGUF, to check the engine's counts independently."""
    return Llama(model_path=str(MODEL), vocab_only=True, verbose=False)


@pytest.fixture
async def engine() -> AsyncIterator[ChatEngine]:
    engine = ChatEngine(MODEL, n_threads=2)
    await engine.start()
    yield engine
    await engine.close()


async def start(**options: object) -> ChatEngine:
    engine = ChatEngine(MODEL, n_threads=2, **options)  # type: ignore[arg-type]
    await engine.start()
    return engine


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the bound is only there to fail instead of hanging on a slow machine."""
    for _ in range(6000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached: {what}")


def reference_chat_tokens(reference: Llama, messages: list[Message]) -> int:
    """Tokens of the prompt the GGUF's own chat template makes, counted by llama-cpp-python."""
    formatter = Jinja2ChatFormatter(
        template=reference.metadata["tokenizer.chat_template"],
        eos_token=reference.detokenize([reference.token_eos()], special=True).decode(),
        bos_token=reference.detokenize([reference.token_bos()], special=True).decode(),
    )
    prompt = formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
    return len(reference.tokenize(prompt.encode(), add_bos=False, special=True))


def check_budget(result: ChatResult, max_tokens: int) -> None:
    assert result.finish_reason in ("stop", "length")
    assert 0 <= result.usage.completion_tokens <= max_tokens
    if result.finish_reason == "length":
        assert result.usage.completion_tokens == max_tokens


async def test_chat_returns_text_and_exact_usage(engine: ChatEngine, reference: Llama) -> None:
    result = await engine.chat(QUESTION, GREEDY)

    assert result.text.strip()
    check_budget(result, 12)
    assert result.usage.prompt_tokens == reference_chat_tokens(reference, QUESTION)
    assert result.usage.prompt_tokens == len(await engine.tokenize(engine.render_chat(QUESTION)))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


async def test_complete_counts_the_raw_prompt_and_fills_max_tokens(engine: ChatEngine, reference: Llama) -> None:
    result = await engine.complete(COUNTING, SamplingParams(max_tokens=8, temperature=0))

    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 8
    assert result.usage.prompt_tokens == len(reference.tokenize(COUNTING.encode(), add_bos=True, special=True))
    assert result.text


async def test_stream_sends_deltas_then_one_final_event(engine: ChatEngine) -> None:
    events: list[ChatDelta] = [event async for event in engine.stream_chat(QUESTION, GREEDY)]
    whole = await engine.chat(QUESTION, GREEDY)

    *deltas, last = events
    assert deltas, "expected at least one text delta"
    assert all(event.text and not event.finish_reason and event.usage is None for event in deltas)
    assert last.text == ""
    assert last.finish_reason == whole.finish_reason
    assert last.usage == whole.usage
    assert "".join(event.text for event in deltas) == whole.text


async def test_a_slow_consumer_gets_the_tokens_that_piled_up_as_one_delta(engine: ChatEngine) -> None:
    params = SamplingParams(max_tokens=24, temperature=0, logprobs=True)
    whole = await engine.complete(COUNTING, params)
    deltas: list[ChatDelta] = []
    async for event in engine.stream_complete(COUNTING, params):
        deltas.append(event)
        if len(deltas) == 1:
            # Behind the decoder: the rest of the answer is decoded while this consumer sleeps.
            await wait_until(lambda: engine.stats().active_sequences == 0, "the answer decoded")
            # A round trip through the worker: its last step's events were handed over before this answer.
            await engine.tokenize("x")

    *texts, last = deltas
    assert len(texts) == 2  # the first token, then everything that waited, joined
    assert "".join(event.text for event in texts) == whole.text
    assert [p.token for event in texts for p in event.logprobs] == [p.token for p in whole.logprobs]
    assert len(whole.logprobs) == whole.usage.completion_tokens == 24
    assert last.text == "" and last.finish_reason == whole.finish_reason and last.usage == whole.usage


async def test_stop_strings_end_the_output_before_them(engine: ChatEngine) -> None:
    free = await engine.complete(COUNTING, SamplingParams(max_tokens=16, temperature=0))
    middle = len(free.text) // 2
    stop = free.text[middle : middle + 3]  # most likely spans two tokens: exercises the holding back
    expected = free.text[: free.text.index(stop)]

    stopped = await engine.complete(
        COUNTING, SamplingParams(max_tokens=16, temperature=0, stop=("never-in-the-output", stop))
    )

    assert stopped.finish_reason == "stop"
    assert stopped.text == expected
    assert stop not in stopped.text
    assert stopped.usage.completion_tokens <= free.usage.completion_tokens
    streamed = [
        event
        async for event in engine.stream_complete(COUNTING, SamplingParams(max_tokens=16, temperature=0, stop=(stop,)))
    ]
    assert "".join(event.text for event in streamed) == expected


async def test_characters_split_across_tokens_stream_whole(engine: ChatEngine) -> None:
    # Byte-level BPE cuts many CJK characters over two or three tokens.
    prompt = "日本語のテキスト：東京、大阪、"
    params = SamplingParams(max_tokens=24, temperature=0)
    deltas = [event.text async for event in engine.stream_complete(prompt, params)]
    whole = await engine.complete(prompt, params)

    assert "".join(deltas) == whole.text
    assert "\ufffd" not in whole.text
    assert whole.usage.completion_tokens == 24
    assert len([delta for delta in deltas if delta]) < 24  # some tokens were only parts of a character


async def test_same_seed_same_output(engine: ChatEngine) -> None:
    def answer(result: ChatResult) -> tuple[str, str, object]:
        return result.text, result.finish_reason, result.usage  # each result has its own id and time

    greedy = [await engine.chat(QUESTION, SamplingParams(max_tokens=10, temperature=0, seed=s)) for s in (1, 2)]
    assert answer(greedy[0]) == answer(greedy[1])  # temperature 0 is greedy: the seed does not matter

    seeded = SamplingParams(max_tokens=10, temperature=0.9, top_p=0.95, seed=1234)
    first, second = [await engine.chat(QUESTION, seeded) for _ in range(2)]
    assert answer(first) == answer(second)


async def test_full_queue_refuses_at_once_with_retry_after() -> None:
    engine = await start(max_queue=1, max_sequences=1)
    try:
        running = engine.stream_complete(COUNTING, LONG)
        await anext(running)
        queued = asyncio.create_task(engine.complete(COUNTING, SamplingParams(max_tokens=4, temperature=0)))
        await wait_until(lambda: engine.stats().queue_length == 1, "the second request waits")

        with pytest.raises(QueueFull) as refused:
            await anext(engine.stream_complete(COUNTING, GREEDY))

        error = refused.value
        assert error.code == "inference_queue_full"
        assert error.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.retry_after is not None and error.retry_after > 0
        stats = engine.stats()
        assert (stats.queue_length, stats.queue_capacity, stats.active_sequences) == (1, 1, 1)

        await running.aclose()
        result = await queued
        assert (result.finish_reason, result.usage.completion_tokens) == ("length", 4)
        assert (engine.stats().queue_length, engine.stats().active_sequences) == (0, 0)
    finally:
        await engine.close()


async def test_closing_a_stream_lets_the_next_request_start() -> None:
    recorder = Recorder()
    engine = await start(max_sequences=1, observer=recorder)
    try:
        first = engine.stream_complete(COUNTING, LONG)
        for _ in range(3):
            assert not (await anext(first)).finish_reason
        second = asyncio.create_task(engine.complete(COUNTING, SamplingParams(max_tokens=4, temperature=0)))
        await wait_until(lambda: engine.stats().queue_length == 1, "the second request waits for the only sequence")

        await first.aclose()
        result = await second

        assert (result.finish_reason, result.usage.completion_tokens) == ("length", 4)
        cancelled, done = recorder.finished
        assert cancelled.outcome == "cancelled"
        assert 3 <= cancelled.completion_tokens < LONG.max_tokens  # dropped long before its budget
        assert done.outcome == "length"
        assert engine.stats().active_sequences == 0
    finally:
        await engine.close()


async def test_cancelling_the_consuming_task_drops_the_sequence() -> None:
    recorder = Recorder()
    engine = await start(observer=recorder)
    try:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.stream_complete(COUNTING, LONG):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await wait_until(lambda: bool(recorder.finished), "the sequence is dropped")
        assert recorder.finished[0].outcome == "cancelled"
        assert recorder.finished[0].completion_tokens < LONG.max_tokens
        assert engine.stats().active_sequences == 0
    finally:
        await engine.close()


async def test_four_concurrent_streams_decode_together(engine: ChatEngine, reference: Llama) -> None:
    prompts = ["1, 2, 3,", "10, 20, 30,", "Monday, Tuesday,", "a, b, c,"]
    params = SamplingParams(max_tokens=16, temperature=0)
    alone = [await engine.complete(prompt, params) for prompt in prompts]
    arrivals: list[tuple[int, ChatDelta]] = []

    async def consume(index: int) -> None:
        async for event in engine.stream_complete(prompts[index], params):
            arrivals.append((index, event))

    await asyncio.gather(*(consume(index) for index in range(4)))

    # Every stream had produced text before any of them ended: they were decoded side by side.
    first_final = next(position for position, (_, event) in enumerate(arrivals) if event.finish_reason)
    assert {index for index, _ in arrivals[:first_final]} == {0, 1, 2, 3}
    for index, prompt in enumerate(prompts):
        events = [event for i, event in arrivals if i == index]
        final = events[-1]
        assert final.usage is not None
        assert final.usage.prompt_tokens == len(reference.tokenize(prompt.encode(), add_bos=True, special=True))
        check_budget(ChatResult("", final.finish_reason or "cancelled", final.usage), 16)
        # Batching changes nothing in a sequence's results: the same as when it ran alone.
        assert "".join(event.text for event in events) == alone[index].text
        assert final.usage == alone[index].usage
    assert engine.stats().active_sequences == 0


@pytest.mark.parametrize(
    ("messages", "params", "message"),
    [
        ([], GREEDY, "messages"),
        ([Message("wizard", "hi")], GREEDY, "role"),
        ([Message("user", None)], GREEDY, "content"),  # type: ignore[arg-type]
        # The parameters' own bounds are checked when SamplingParams is made (tests/unit/common/test_chat.py);
        # the engine adds the one that depends on it: its context window.
        (QUESTION, SamplingParams(max_tokens=2048), "max_tokens"),
    ],
)
async def test_invalid_requests_raise_invalid_argument(
    engine: ChatEngine, messages: list, params: SamplingParams, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await engine.chat(messages, params)
    assert engine.stats().queue_length == 0


async def test_prompts_that_do_not_fit_the_context_raise_invalid_argument() -> None:
    engine = await start(n_ctx=64)
    try:
        with pytest.raises(InvalidArgument, match="context window"):
            await engine.chat([Message("user", "tell me more " * 40)], GREEDY)
        with pytest.raises(InvalidArgument, match="context window"):
            await engine.complete(COUNTING, SamplingParams(max_tokens=60))
        with pytest.raises(InvalidArgument, match="empty"):
            await engine.complete("", GREEDY)
        assert engine.stats().queue_length == 0
        # Without max_tokens the answer may use the rest of the window.
        result = await engine.complete(COUNTING, SamplingParams(temperature=0))
        assert result.usage.total_tokens <= 64
    finally:
        await engine.close()


async def test_observer_sees_load_queue_first_token_and_finish() -> None:
    recorder = Recorder()
    engine = await start(observer=recorder)
    result = await engine.chat(QUESTION, GREEDY)
    await engine.close()

    names = [name for name, _ in recorder.calls]
    assert names[0] == "loaded" and names[-2:] == ["loaded", "queue"]
    assert ("queue", (1, 16)) in recorder.calls and ("queue", (0, 16)) in recorder.calls
    assert names.index("first_token") < names.index("finished")
    (stats,) = recorder.finished
    assert stats.outcome == result.finish_reason
    assert (stats.prompt_tokens, stats.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert stats.time_to_first_token is not None
    assert 0 <= stats.queued_seconds <= stats.time_to_first_token <= stats.latency_seconds


async def test_close_ends_streams_as_cancelled_and_refuses_new_ones() -> None:
    engine = await start()
    stream = engine.stream_complete(COUNTING, LONG)
    await anext(stream)

    await engine.close()

    rest = [event async for event in stream]
    assert rest[-1].finish_reason == "cancelled"
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens < LONG.max_tokens
    assert not engine.loaded and not engine.stats().loaded
    with pytest.raises(Unavailable):
        await engine.chat(QUESTION, GREEDY)


async def test_stats_before_start() -> None:
    engine = ChatEngine(MODEL, max_queue=3, max_sequences=2)
    stats = engine.stats()
    assert (stats.loaded, stats.queue_length, stats.queue_capacity, stats.active_sequences) == (
        False,
        0,
        3,
        0,
    )
    with pytest.raises(Unavailable):
        await engine.chat(QUESTION, GREEDY)


def test_chat_model_path_default_and_configured(tmp_path: Path) -> None:
    assert MODEL.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and MODEL.is_file()
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    assert chat_model_path(str(own)) == own

    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelNotFound) as error:
        chat_model_path(missing)
    assert str(missing) in str(error.value) and CHAT_MODEL_ENV in str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert os.fspath(MODEL) == os.fspath(chat_model_path(None))
