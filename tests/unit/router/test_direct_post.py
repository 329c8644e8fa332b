"""An HTTP/1.1 provider's JSON call goes straight through the aiohttp session under its transport, and
sends and reads what the httpx path would: same headers, same body, same answer, same typed errors."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest

from goblin_tools.fakes.providers import FakeProviders
from services.common.chat import Message, SamplingParams
from services.router.models import ModelInfo
from services.router.providers.base import CallContext
from services.router.providers.errors import ProviderAuthError, ProviderBadResponse, ProviderRateLimited
from services.router.providers.http import HttpOptions, json_body, parse_json
from services.router.providers.openai import OpenAICompatibleProvider

ONE = ModelInfo(id="acme/one", provider="acme", owned_by="acme")
HI = [Message("user", "hi é")]
CTX = CallContext(correlation_id="c-1", tenant_id="t")
OPTIONS = HttpOptions(timeout_s=2, connect_timeout_s=1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


def provider(fake: FakeProviders, key: str | None = None) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "acme", f"http://127.0.0.1:{fake.port}/acme/v1", key or fake.key("acme"), OPTIONS, headers={"x-org": "o1"}
    )


async def ask_both_ways(fake: FakeProviders, monkeypatch: pytest.MonkeyPatch, key: str | None = None) -> list:
    """The same chat asked through the direct path, then through httpx (the direct path switched off)."""
    outcomes = []
    for direct in (True, False):
        fake.reset()
        acme = provider(fake, key)
        if not direct:
            monkeypatch.setattr(acme, "_direct_session", lambda: None)
        else:
            assert acme._direct_session() is not None, "an http:// provider over aiohttp takes the direct path"
        try:
            outcomes.append(await acme.chat(ONE, HI, SamplingParams(max_tokens=4), CTX))
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append(exc)
        finally:
            await acme.aclose()
        outcomes.append(fake.requests("acme"))
    return outcomes


async def test_the_direct_path_sends_and_reads_what_httpx_would(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, direct_seen, via_httpx, httpx_seen = await ask_both_ways(fake, monkeypatch)
    assert direct.text == via_httpx.text and direct.usage == via_httpx.usage and direct.text
    (one,), (other,) = direct_seen, httpx_seen
    assert one.body == other.body and one.path == other.path
    for name in ("authorization", "content-type", "accept", "user-agent", "x-org"):
        assert one.headers.get(name) == other.headers.get(name), name
    assert one.headers["authorization"] == f"Bearer {fake.key('acme')}"


async def test_errors_are_the_same_typed_errors_either_way(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused, _, refused_httpx, _ = await ask_both_ways(fake, monkeypatch, key="wrong-key")
    assert type(refused) is type(refused_httpx) is ProviderAuthError and str(refused) == str(refused_httpx)
    outcomes = []
    for direct in (True, False):
        fake.reset()
        fake.fail("acme", 429, times=1, retry_after="7")
        acme = provider(fake)
        if not direct:
            monkeypatch.setattr(acme, "_direct_session", lambda: None)
        with pytest.raises(ProviderRateLimited) as info:
            await acme.chat(ONE, HI, SamplingParams(), CTX)
        await acme.aclose()
        outcomes.append((info.value.retry_after, str(info.value)))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == 7


def test_headers_are_merged_once_per_key_and_follow_a_new_key(fake: FakeProviders) -> None:
    acme = provider(fake)
    base = {"accept": "application/json"}
    first = acme._headers(base)
    assert acme._headers(base) is first
    acme.api_key = "another"
    assert acme._headers(base)["authorization"] == "Bearer another"


def test_json_both_ways_reads_and_writes_what_json_did() -> None:
    assert parse_json("acme", b'{"a": 1.5, "t": "\\u00e9"}') == {"a": 1.5, "t": "é"}
    assert parse_json("acme", b'{"id": 18446744073709551615}')["id"] == 2**64 - 1  # past that: a float
    assert math.isinf(parse_json("acme", b'{"lp": -Infinity}')["lp"])
    with pytest.raises(ProviderBadResponse):
        parse_json("acme", b"{not json")
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "stop": ("a",)}
    assert json.loads(json_body(body)) == json.loads(json.dumps(body))
    assert json.loads(json_body({"logit_bias": {1: 2}, "n": 2**70})) == {"logit_bias": {"1": 2}, "n": 2**70}
