"""A client that leaves a streamed chat midway, through the whole suite (HTTPS gateway, gRPC router, a
fake provider streaming slowly): the gateway cancels the router's stream, the router closes the
provider's (tests/unit/router/test_direct_stream.py shows that connection closing) and books the request
as cancelled, with the text that was generated."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, catalog_suite
from tests.integration.test_router import SUITE_ENV, booked, flush_redis, redis_db


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> Iterator[Suite]:
    url = redis_db(redis_url, 9)
    flush_redis(url)
    with catalog_suite(
        tmp_path_factory.mktemp("stream-disconnect"),
        f"""
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{fake.port}/acme/v1
models:
  acme/acme-chat:
    context_length: 8000
""",
        DATABASE_URL=new_database(),
        REDIS_URL=url,
        ACME_API_KEY=fake.key("acme"),
        GOBLIN_DAILY_BUDGET_USD="1000",
        **{**SUITE_ENV, "GOBLIN_PROVIDER_TIMEOUT_S": "30"},
        **fake.env(),
    ) as suite:
        yield suite


def test_a_client_gone_mid_stream_cancels_it_down_to_the_provider(suite: Suite, fake: FakeProviders) -> None:
    fake.reset("acme")
    fake.slow("acme", 0, per_token=2.0, times=1)  # a token every 2 s: the whole answer would take ~14 s
    correlation = f"gone-{uuid.uuid4()}"
    body = {"model": "acme/acme-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {suite.admin_key}", "X-Correlation-ID": correlation}
    content = ""
    with httpx.Client(verify=suite.ssl_context(), timeout=60) as http:
        with http.stream("POST", f"{suite.gateway_url}/v1/chat/completions", json=body, headers=headers) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    content = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    if content:
                        break  # the first token: the client leaves (the connection closes unread)
    assert content
    row = booked(suite, correlation)
    assert row["outcome"] == "cancelled" and row["error_code"] == "cancelled" and row["stream"]
    assert row["provider"] == "acme" and row["completion_tokens"] > 0, "the text generated is still billed"
