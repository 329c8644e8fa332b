"""Client input that used to yield a bare 500 (issue 12, item 5), and the net for real internal errors.

Against a running suite whose providers are fakes (goblin_tools/fakes/providers.py): lone surrogates
(JSON ``\\ud800`` escapes, valid JSON that no UTF-8 encoder accepts) wherever a client puts text, and a
provider answering 429 with a ``Retry-After`` of ``inf``, ``nan`` or a huge number. Every answer must be
a 4xx/5xx with the error envelope, the correlation id and the security headers, and leak nothing of
ours. Then, in process, a route that raises: the same envelope, not Starlette's bare 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, start_suite
from services.gateway.config import GatewaySettings
from services.gateway.errors import api_error_from_grpc, retry_after_header
from services.gateway.main import create_app
from services.router.providers.http import MAX_RETRY_AFTER_S as PROVIDER_MAX_RETRY_AFTER_S
from services.router.providers.http import retry_after_seconds
from tests.security.envelope import assert_error_envelope

CHAT = "openai/gpt-4o-mini"
LONE = "\\ud800"  # as it travels in JSON: six characters, a valid escape of an invalid character


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("no500"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_ROUTER_RETRIES="0",
        GOBLIN_DAILY_BUDGET_USD="1000",
        **fake.env(),
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture
def client(target: Suite) -> Iterator[httpx.Client]:
    with target.client(headers={"Authorization": f"Bearer {target.admin_key}"}, timeout=60) as http:
        yield http


def post_json(client: httpx.Client, path: str, raw: str) -> httpx.Response:
    return client.post(path, content=raw.encode(), headers={"Content-Type": "application/json"})


SURROGATE_BODIES = {
    "message content": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi {LONE}"}}], "max_tokens": 2}}',
    ),
    "streamed message content": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "stream": true, "max_tokens": 2,'
        f' "messages": [{{"role": "user", "content": "hi {LONE}"}}]}}',
    ),
    "message part text": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "max_tokens": 2,'
        f' "messages": [{{"role": "user", "content": [{{"type": "text", "text": "{LONE}"}}]}}]}}',
    ),
    "fallbacks": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "max_tokens": 2, "messages": [{{"role": "user", "content": "hi"}}],'
        f' "goblin": {{"fallbacks": ["openai/x{LONE}"]}}}}',
    ),
    "model name": (
        "/v1/chat/completions",
        f'{{"model": "openai/gpt{LONE}", "max_tokens": 2, "messages": [{{"role": "user", "content": "hi"}}]}}',
    ),
    "tool description": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "max_tokens": 2, "messages": [{{"role": "user", "content": "hi"}}],'
        f' "tools": [{{"type": "function", "function": {{"name": "f", "description": "{LONE}"}}}}]}}',
    ),
    "tool call arguments": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "max_tokens": 2, "messages": [{{"role": "user", "content": "hi"}},'
        f' {{"role": "assistant", "tool_calls": [{{"id": "c", "type": "function",'
        f' "function": {{"name": "f", "arguments": "{LONE}"}}}}]}}, {{"role": "tool", "tool_call_id": "c",'
        f' "content": "x"}}], "tools": [{{"type": "function", "function": {{"name": "f"}}}}]}}',
    ),
    "legacy completion prompt": ("/v1/completions", f'{{"model": "{CHAT}", "prompt": "a {LONE}", "max_tokens": 2}}'),
    "embedding input": ("/v1/embeddings", f'{{"model": "local", "input": "a {LONE} b"}}'),
    "embedding input list": ("/v1/embeddings", f'{{"model": "local", "input": ["ok", "{LONE}"]}}'),
    "legacy invoke": ("/invoke", f'{{"prompt": "{LONE}", "provider": "openai", "model": "gpt-4o-mini"}}'),
    "login": ("/auth/login", f'{{"email": "a{LONE}@example.com", "password": "{LONE}"}}'),
}


@pytest.mark.parametrize("case", list(SURROGATE_BODIES))
def test_lone_surrogates_in_json_are_a_client_error(client: httpx.Client, case: str) -> None:
    path, raw = SURROGATE_BODIES[case]
    reply = post_json(client, path, raw)
    body = assert_error_envelope(reply)
    assert 400 <= reply.status_code < 500, (case, reply.status_code, body)


# Python's JSON parser accepts NaN and Infinity (not JSON, but a client can send them) and 1e400 is inf.
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]
NUMBER_FIELDS = [
    "temperature",
    "top_p",
    "max_tokens",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "top_logprobs",
]


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_non_finite_numbers_are_a_client_error(client: httpx.Client, field: str, number: str) -> None:
    raw = f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi"}}], "{field}": {number}}}'
    reply = post_json(client, "/v1/chat/completions", raw)
    if reply.status_code < 400:
        return  # a field the API ignores: harmless
    body = assert_error_envelope(reply)
    assert 400 <= reply.status_code < 500, (field, number, body)


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_elsewhere(client: httpx.Client, number: str) -> None:
    bodies = [
        (
            "/v1/chat/completions",
            f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi", "x": {number}}}]}}',
        ),
        (
            "/v1/chat/completions",
            f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi"}}],'
            f' "goblin": {{"rag": {{"collection": "c", "top_k": {number}}}}}}}',
        ),
        ("/v1/embeddings", f'{{"model": "local", "input": [{number}]}}'),
        (
            "/v1/chat/completions",
            f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi"}}],'
            f' "logit_bias": {{"5": {number}}}}}',
        ),
        ("/v1/completions", f'{{"model": "{CHAT}", "prompt": "hi", "temperature": {number}, "logprobs": {number}}}'),
        ("/auth/api-keys", f'{{"name": "n", "tokens_per_day": {number}, "expires_at": {number}}}'),
    ]
    for path, raw in bodies:
        reply = post_json(client, path, raw)
        if reply.status_code < 400:
            continue
        body = assert_error_envelope(reply)
        assert 400 <= reply.status_code < 500, (path, number, body)


def test_odd_bytes_in_headers_and_query_strings(client: httpx.Client) -> None:
    # The server decodes both as latin-1 or with replacement: what must hold is the envelope.
    replies = [
        client.get("/v1/models?x=%ED%A0%80&y=%FF", headers={"X-Correlation-ID": b"\xed\xa0\x80"}),
        client.get("/v1/tasks/%ED%A0%80"),
        client.get("/auth/me", headers={"Authorization": b"Bearer \xed\xa0\x80\xff"}),
    ]
    for reply in replies:
        if reply.status_code < 400:
            assert reply.headers["x-correlation-id"]  # a fresh id, never the bytes we sent
            continue
        assert_error_envelope(reply)
    assert replies[2].status_code == 401


# One model deployment per value: a provider's long Retry-After cools the deployment it named for that
# long (bounded), so a second value sent to the same model would meet its open circuit, not the fake.
@pytest.mark.parametrize(
    ("value", "model"),
    [
        ("inf", "openai/gpt-4.1"),
        ("nan", "openai/gpt-4.1-mini"),
        ("1e308", "openai/gpt-4o"),
        ("99999999999999999999", "openai/gpt-5-mini"),
        ("-inf", "openai/gpt-5-nano"),
    ],
)
def test_a_providers_unbounded_retry_after(client: httpx.Client, fake: FakeProviders, value: str, model: str) -> None:
    fake.reset("openai")
    fake.fail("openai", 429, times=1, retry_after=value)
    reply = client.post(
        "/v1/chat/completions",
        json={"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    body = assert_error_envelope(reply)
    assert reply.status_code == 429, body
    if "retry-after" in reply.headers:
        seconds = int(reply.headers["retry-after"])
        assert 1 <= seconds <= 3600
        assert body.get("retry_after") == seconds


# -- in process: the net for an internal error -----------------------------------------------------


@pytest.fixture
def app_with_a_broken_route(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TestClient:
    for name, value in {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "GOBLIN_HOME": str(tmp_path),
        "GOBLIN_RATE_LIMIT_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    app = create_app(GatewaySettings())

    async def broken() -> None:
        raise RuntimeError("connection to db.internal:5432 failed, see /srv/goblin/secret.py")

    app.add_api_route("/broken", broken)
    # No lifespan: the route needs no state, and nothing here should connect anywhere.
    return TestClient(app, raise_server_exceptions=False)


def test_an_internal_error_keeps_the_envelope(app_with_a_broken_route: TestClient) -> None:
    reply = app_with_a_broken_route.get("/broken", headers={"X-Correlation-ID": "trace-me-123"})
    assert reply.status_code == 500
    body = assert_error_envelope(reply)
    assert body["error"] == "internal_error"
    assert body["correlation_id"] == "trace-me-123"
    assert "db.internal" not in reply.text and "secret" not in reply.text


@pytest.mark.parametrize("code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS])
def test_a_backends_exception_text_stays_in_the_log(code: grpc.StatusCode) -> None:
    # What grpc.aio sends for an exception a servicer did not handle: its class and text.
    failure = grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Unexpected <class 'OSError'>: could not open /var/lib/goblin/x.db on 10.0.3.7:5432",
    )
    error = api_error_from_grpc(failure, service="router")
    assert error.status_code == 502
    assert "OSError" not in error.message and "/var/lib" not in error.message and "10.0.3.7" not in error.message
    assert error.message.startswith("router failed")


def test_retry_after_values_are_bounded_where_they_are_parsed() -> None:
    assert [retry_after_header(v) for v in ("inf", "1e308", "-inf", "0.2", "59.5", 90_000.0)] == [
        86_400,
        86_400,
        1,
        1,
        60,
        86_400,
    ]
    assert retry_after_header("nan") is None and retry_after_header("soon") is None
    for header in ("inf", "1e308", "99999999999999999999"):
        assert retry_after_seconds({"retry-after": header}) == PROVIDER_MAX_RETRY_AFTER_S
    assert retry_after_seconds({"retry-after": "nan"}) is None
    assert retry_after_seconds({"retry-after-ms": "nan", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "inf"}) == PROVIDER_MAX_RETRY_AFTER_S
