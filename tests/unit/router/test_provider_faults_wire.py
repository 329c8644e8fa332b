"""The OpenAI-compatible adapter against the fake provider's faults over real HTTP (aiohttp): which
failures name a model and which are the provider's as a whole (the provider-wide circuit's business),
and a fault limited to one model leaves the provider's other models answering."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from goblin_tools.fakes.providers import FakeProviders
from services.common.chat import Message, SamplingParams
from services.router.models import ModelInfo
from services.router.providers.base import CallContext
from services.router.providers.errors import (
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    failure_policy,
)
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider

ONE = ModelInfo(id="acme/one", provider="acme", owned_by="acme")
TWO = ModelInfo(id="acme/two", provider="acme", owned_by="acme")
HI = [Message("user", "hi")]
CTX = CallContext(correlation_id="c-1", tenant_id="t")
OPTIONS = HttpOptions(timeout_s=0.5, connect_timeout_s=0.5)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
async def acme(fake: FakeProviders) -> AsyncIterator[OpenAICompatibleProvider]:
    fake.reset()
    provider = OpenAICompatibleProvider("acme", f"http://127.0.0.1:{fake.port}/acme/v1", fake.key("acme"), OPTIONS)
    yield provider
    await provider.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_reset_connection_is_a_failure_of_the_model_asked(
    fake: FakeProviders, acme: OpenAICompatibleProvider
) -> None:
    fake.reset_connection("acme", times=None, model="one")
    with pytest.raises(ProviderUnavailable) as info:
        await acme.chat(ONE, HI, SamplingParams(), CTX)
    assert not failure_policy(info.value).provider_wide, "the request reached the provider"
    assert (await acme.chat(TWO, HI, SamplingParams(), CTX)).text, "the other model still answers"
    with pytest.raises(ProviderUnavailable):
        async for _ in acme.stream(ONE, HI, SamplingParams(), CTX):
            pass


async def test_refused_connections_are_provider_wide() -> None:
    gone = OpenAICompatibleProvider("gone", f"http://127.0.0.1:{free_port()}/v1", "k", OPTIONS)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await gone.chat(ONE, HI, SamplingParams(), CTX)
    finally:
        await gone.aclose()
    policy = failure_policy(info.value)
    assert policy.provider_wide and policy.breaker and policy.retryable
    assert info.value.code == "provider_unavailable", "the caller's error code is unchanged"


@pytest.mark.parametrize(
    ("inject", "error"),
    [
        (lambda f: f.slow("acme", 5, times=1, model="one"), ProviderTimeout),
        (lambda f: f.malformed("acme", times=1, model="one"), ProviderBadResponse),
        (lambda f: f.fail("acme", 429, times=1, retry_after="30", model="one"), ProviderRateLimited),
    ],
    ids=["hangs", "malformed", "429"],
)
async def test_answers_gone_wrong_name_the_model(
    fake: FakeProviders, acme: OpenAICompatibleProvider, inject, error: type
) -> None:
    inject(fake)
    with pytest.raises(error) as info:
        await acme.chat(ONE, HI, SamplingParams(), CTX)
    assert not failure_policy(info.value).provider_wide
    if error is ProviderRateLimited:
        assert info.value.retry_after == 30


async def test_a_half_stream_ends_in_an_error_after_the_text_it_sent(
    fake: FakeProviders, acme: OpenAICompatibleProvider
) -> None:
    fake.break_stream("acme", after_tokens=2, times=1, model="one")
    text = []
    with pytest.raises(ProviderUnavailable) as info:
        async for delta in acme.stream(ONE, HI, SamplingParams(), CTX):
            text.append(delta.text)
    assert "".join(text).strip(), "some text came before the break"
    assert not failure_policy(info.value).provider_wide
