"""An HTTP/1.1 provider's SSE stream goes straight through the aiohttp session under its transport: the
same request, the same deltas and the same typed errors as the httpx path; a stream left early closes
the provider's connection; a stream cut short, stalled or malformed ends in a typed error; and the
decoder reads the event-stream format however the network splits it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from goblin.v1 import common_pb2
from goblin_tools.fakes.providers import FakeProviders
from services.common.chat import ChatDelta, Message, SamplingParams
from services.router.models import ModelInfo
from services.router.provider_state import ProviderStates
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.base import CallContext
from services.router.providers.errors import (
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpOptions, HttpProvider
from services.router.providers.openai import OpenAICompatibleProvider
from services.router.providers.sse import SseDecoder, SseEvent
from services.router.service import RetryPolicy, RouterService
from services.router.servicer import RouterServicer
from tests.unit.router.conftest import TEST_CATALOG, ListLedger, Providers, catalog_from

ONE = ModelInfo(id="acme/one", provider="acme", owned_by="acme")
HI = [Message("user", "hi é")]
CTX = CallContext(correlation_id="c-1", tenant_id="t")
OPTIONS = HttpOptions(timeout_s=1, connect_timeout_s=1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


async def collect(provider: HttpProvider, model: ModelInfo = ONE) -> list[ChatDelta]:
    return [d async for d in provider.stream(model, HI, SamplingParams(max_tokens=8), CTX)]  # type: ignore[attr-defined]


def adapters(fake: FakeProviders) -> list[tuple[Callable[[], HttpProvider], ModelInfo, str]]:
    base = f"http://127.0.0.1:{fake.port}"
    return [
        (
            lambda: OpenAICompatibleProvider("acme", f"{base}/acme/v1", fake.key("acme"), OPTIONS),
            ONE,
            "acme",
        ),
        (
            lambda: AnthropicProvider("anthropic", f"{base}/anthropic", fake.key("anthropic"), OPTIONS),
            ModelInfo(id="anthropic/claude", provider="anthropic", owned_by="anthropic"),
            "anthropic",
        ),
        (
            lambda: GeminiProvider("gemini", f"{base}/gemini", fake.key("gemini"), OPTIONS),
            ModelInfo(id="gemini/flash", provider="gemini", owned_by="gemini"),
            "gemini",
        ),
    ]


async def test_every_adapter_streams_the_same_either_way(fake: FakeProviders, monkeypatch: pytest.MonkeyPatch) -> None:
    for make, model, tag in adapters(fake):
        outcomes = []
        for direct in (True, False):
            fake.reset()
            provider = make()
            if direct:
                assert provider._direct_session() is not None, "an http:// provider over aiohttp streams directly"
            else:
                monkeypatch.setattr(provider, "_direct_session", lambda: None)
            try:
                outcomes.append((await collect(provider, model), fake.requests(tag)))
            finally:
                await provider.aclose()
        (direct_deltas, (one,)), (httpx_deltas, (other,)) = outcomes
        assert direct_deltas == httpx_deltas and "".join(d.text for d in direct_deltas).strip(), tag
        assert direct_deltas[-1].finish_reason and direct_deltas[-1].usage is not None
        assert one.body == other.body and one.path == other.path and one.query == other.query, tag
        for name in ("content-type", "accept", "user-agent", "authorization", "x-api-key", "x-goog-api-key"):
            assert one.headers.get(name) == other.headers.get(name), (tag, name)


async def test_a_refused_stream_is_the_same_typed_error_either_way(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = []
    for direct in (True, False):
        fake.reset()
        fake.fail("acme", 429, times=1, retry_after="7")
        provider = OpenAICompatibleProvider("acme", f"http://127.0.0.1:{fake.port}/acme/v1", fake.key("acme"), OPTIONS)
        if not direct:
            monkeypatch.setattr(provider, "_direct_session", lambda: None)
        with pytest.raises(ProviderRateLimited) as info:
            await collect(provider)
        await provider.aclose()
        outcomes.append((info.value.retry_after, str(info.value)))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == 7


async def test_a_half_stream_on_the_direct_path_ends_in_an_error_after_its_text(fake: FakeProviders) -> None:
    fake.reset()
    fake.break_stream("acme", after_tokens=2, times=1)
    provider = OpenAICompatibleProvider("acme", f"http://127.0.0.1:{fake.port}/acme/v1", fake.key("acme"), OPTIONS)
    assert provider._direct_session() is not None
    text = []
    try:
        with pytest.raises(ProviderUnavailable):
            async for delta in provider.stream(ONE, HI, SamplingParams(), CTX):
                text.append(delta.text)
    finally:
        await provider.aclose()
    assert "".join(text).strip(), "the text before the break came through"


class RawProvider:
    """An HTTP/1.1 server that answers every request with ``head`` then ``chunks`` (each written apart,
    ``pause_s`` between them), then holds the connection open until the client closes it (or closes it
    itself with ``close``); it notes when each connection was closed by the client."""

    def __init__(self, chunks: list[bytes], *, pause_s: float = 0.0, close: bool = False, head: bytes = b"") -> None:
        self.head = head or (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.chunks, self.pause_s, self.close = chunks, pause_s, close
        self.client_closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawProvider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head; the body is not needed
        writer.write(self.head)
        for chunk in self.chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
        if self.close:
            writer.close()
            return
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass
        self.client_closed.set()
        writer.close()


def chunk(text: str) -> bytes:
    return b'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n' % text.encode()


async def stream_from(raw: RawProvider, read: Callable[[AsyncIterator[ChatDelta]], Awaitable[object]]) -> object:
    provider = OpenAICompatibleProvider("acme", raw.url, "k", OPTIONS)
    assert provider._direct_session() is not None
    try:
        return await read(provider.stream(ONE, HI, SamplingParams(), CTX))
    finally:
        await provider.aclose()


async def test_a_stream_left_early_closes_the_provider_connection() -> None:
    async with RawProvider([chunk("Hello"), chunk(" there")], pause_s=0.05) as raw:

        async def first_then_leave(deltas: AsyncIterator[ChatDelta]) -> str:
            first = await anext(deltas)
            await deltas.aclose()  # what the router's service does when its caller goes away
            return first.text

        assert await stream_from(raw, first_then_leave) == "Hello"
        await asyncio.wait_for(raw.client_closed.wait(), 5)


async def test_a_cancelled_reader_closes_the_provider_connection() -> None:
    async with RawProvider([chunk("Hello")]) as raw:
        got_first = asyncio.Event()

        async def read_until_cancelled(deltas: AsyncIterator[ChatDelta]) -> None:
            async for _ in deltas:
                got_first.set()

        task = asyncio.create_task(stream_from(raw, read_until_cancelled))
        await asyncio.wait_for(got_first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(raw.client_closed.wait(), 5)


async def read_all(deltas: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [d async for d in deltas]


async def test_a_provider_that_hangs_up_mid_stream_is_an_error_after_the_text() -> None:
    texts: list[str] = []

    async def read(deltas: AsyncIterator[ChatDelta]) -> None:
        async for delta in deltas:
            texts.append(delta.text)

    async with RawProvider([chunk("Hello")], close=True) as raw:
        with pytest.raises(ProviderUnavailable):
            await stream_from(raw, read)
    assert texts == ["Hello"]


async def test_a_stream_that_ends_without_finishing_is_an_error() -> None:
    # A well-formed end of the HTTP answer, but neither [DONE] nor a finish_reason: cut short upstream.
    async with RawProvider([chunk("Hello"), b""], close=True) as raw:
        with pytest.raises(ProviderUnavailable, match="ended before the answer did"):
            await stream_from(raw, read_all)


async def test_a_stalled_stream_times_out() -> None:
    async with RawProvider([chunk("Hello")]) as raw:
        with pytest.raises(ProviderTimeout):
            await stream_from(raw, read_all)


@pytest.mark.parametrize(
    "body",
    [b"data: {not json\n\n", b'data: ["a list"]\n\n', b'data: {"choices": [{"delta": {"tool_calls": [7]}}]}\n\n'],
    ids=["not-json", "not-an-object", "bad-delta"],
)
async def test_malformed_events_are_a_bad_response(body: bytes) -> None:
    async with RawProvider([chunk("Hello"), body]) as raw:
        with pytest.raises(ProviderBadResponse):
            await stream_from(raw, read_all)


async def test_odd_but_valid_lines_are_read() -> None:
    # Comments, CR and CRLF line ends, a field without a space, an unknown field, a line of no field,
    # a line end split across writes, and U+2028 inside the JSON (a line separator for str.splitlines,
    # not for an event stream).
    chunks = [
        b": keep-alive\r\n\r\n",
        b'retry: 10\rdata:{"choices": [{"delta": {"content": "a\xe2\x80\xa8b"}}]}\r',
        b"\n\r\n",
        b"id: 7\nnonsense\n",
        chunk(" c"),
        b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
    ]
    async with RawProvider(chunks, pause_s=0.01) as raw:
        deltas = await stream_from(raw, read_all)
    assert [d.text for d in deltas] == ["a\u2028b", " c", ""]
    assert deltas[-1].finish_reason == "stop"


def events_of(stream: bytes, cuts: list[int]) -> list[SseEvent]:
    decoder = SseDecoder()
    out: list[SseEvent] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    return out + decoder.close()


def test_the_decoder_reads_the_same_events_however_the_bytes_are_split() -> None:
    stream = (
        'event: a\r\ndata: one\r\ndata: two\r\n\r\n: note\rdata: {"t": "é\u2028"}\r\r'
        "data:x\n\nevent: b\ndata\n\ndata: last"
    ).encode()
    whole = events_of(stream, [])
    assert whole == [
        SseEvent("a", "one\ntwo"),
        SseEvent("message", '{"t": "é\u2028"}'),
        SseEvent("message", "x"),
        SseEvent("b", ""),
        SseEvent("message", "last"),
    ]
    rng = random.Random(18)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
        assert events_of(stream, cuts) == whole, cuts


def test_undecodable_bytes_become_replacement_characters() -> None:
    assert events_of(b"data: \xff\xfe ok\n\n", []) == [SseEvent("message", "\ufffd\ufffd ok")]
    assert events_of("data: é\n\n".encode(), [7]) == [SseEvent("message", "é")], "a character split across reads"


async def test_a_caller_gone_from_the_router_stream_closes_the_provider_connection() -> None:
    """The router's side of a client leaving: gRPC cancels the ChatStream handler's task; the service's
    stream closes the provider's, and the provider's connection is closed."""
    async with RawProvider([chunk("Hello")]) as raw:
        alpha = OpenAICompatibleProvider("alpha", raw.url, "k", OPTIONS)
        service = RouterService(
            catalog_from(TEST_CATALOG),
            Providers(alpha),  # type: ignore[arg-type]
            ListLedger(),
            ProviderStates(failure_threshold=3, cooldown_s=60),
            retry=RetryPolicy(retries=0),
        )
        servicer = RouterServicer(service, books=None)  # type: ignore[arg-type]
        request = common_pb2.ChatRequest(
            model="alpha/big", messages=[common_pb2.ChatMessage(role="user", content="hi")]
        )
        got_first = asyncio.Event()

        async def handler() -> None:
            async for _ in servicer.ChatStream(request, None):  # type: ignore[arg-type]
                got_first.set()

        task = asyncio.create_task(handler())
        try:
            await asyncio.wait_for(got_first.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(raw.client_closed.wait(), 5)
        finally:
            await alpha.aclose()
        (row,) = service.ledger.rows  # type: ignore[attr-defined]
        assert row.outcome == "cancelled" and row.stream
