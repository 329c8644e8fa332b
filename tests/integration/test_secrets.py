"""Secrets in prompts, end to end: caught at request_creation (gateway) and worker_processing (router,
before an external provider), redacted or blocked, counted and audited, and never seen by the provider,
the logs or the audit rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from goblin.v1 import common_pb2, router_pb2_grpc
from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, start_suite
from services.common.context import CORRELATION_METADATA_KEY
from tests.integration.principals import as_caller
from tests.unit.common.test_secrets import SAMPLES

MODEL = "openai/gpt-4o-mini"
# The part of each sample that must never travel (for assignments: the value, not the word "password").
CORES = {
    "aws_secret_key": "wJalrXUtnFEMI",
    "url_password": "correct-horse",
    "password_assignment": "Tr0ub4dor",
    "credit_card": "4111 1111 1111 1111",
    "private_key": "b3BlbnNzaC1rZXktdjEAAAAA",
}


def core(secret_type: str) -> str:
    return CORES.get(secret_type, SAMPLES[secret_type])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as providers:
        yield providers


def start(home, new_database: Callable[[], str], redis_url: str, fake: FakeProviders, **env: str) -> Suite:
    suite = start_suite(home, DATABASE_URL=new_database(), REDIS_URL=redis_url, **fake.env(), **env)
    suite.wait_ready()
    return suite


@pytest.fixture(scope="module")
def redact_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> Iterator[Suite]:
    suite = start(tmp_path_factory.mktemp("redact"), new_database, redis_url, fake)
    try:
        yield suite
    finally:
        suite.stop()


def audit_rows(suite: Suite, correlation_id: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            for _ in range(50):
                rows = await conn.fetch(
                    "SELECT * FROM audit.audit_events WHERE event_type = 'secret_detected' AND correlation_id = $1",
                    correlation_id,
                )
                if rows:
                    return rows
                await asyncio.sleep(0.1)
            return []
        finally:
            await conn.close()

    return asyncio.run(fetch())


def provider_saw(fake: FakeProviders) -> str:
    return json.dumps([r.body for r in fake.requests("openai")])


@pytest.mark.parametrize("secret_type", sorted(SAMPLES))
def test_gateway_redacts_before_anything_leaves(redact_suite: Suite, fake: FakeProviders, secret_type: str) -> None:
    fake.reset()
    correlation_id = f"secret-{secret_type}"
    prompt = f"Please debug this: {SAMPLES[secret_type]} thanks"
    with redact_suite.admin_client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8},
            headers={"X-Correlation-ID": correlation_id},
        )
    assert reply.status_code == 200, reply.text
    seen = provider_saw(fake)
    assert f"[REDACTED:{secret_type}]" in seen
    assert core(secret_type) not in seen, "the secret reached the provider"
    rows = audit_rows(redact_suite, correlation_id)
    assert [r["location"] for r in rows] == ["request_creation"]
    details = json.loads(rows[0]["details"])
    assert details["types"] == {secret_type: 1} and details["action"] == "redact"
    assert core(secret_type) not in json.dumps([dict(r) for r in rows], default=str)
    assert core(secret_type) not in redact_suite.log_path.read_text(), "the secret reached the logs"


def test_detections_are_counted_by_location(redact_suite: Suite) -> None:
    with redact_suite.client() as client:
        metrics = client.get("/metrics").text
    line = next(
        m
        for m in metrics.splitlines()
        if m.startswith('goblin_security_secrets_detected_total{location="request_creation"}')
    )
    assert float(line.split()[-1]) >= len(SAMPLES)


def test_router_scans_before_an_external_provider(redact_suite: Suite, fake: FakeProviders) -> None:
    """worker_processing on its own: a caller reaching the router directly (not through the gateway)."""
    fake.reset()
    secret = SAMPLES["github_token"]

    async def call() -> None:
        async with redact_suite.grpc_aio_channel("router") as channel:
            await router_pb2_grpc.RouterStub(channel).Chat(
                common_pb2.ChatRequest(
                    model=MODEL,
                    messages=[common_pb2.ChatMessage(role="user", content=f"token {secret} please")],
                    params=common_pb2.SamplingParams(max_tokens=8),
                ),
                metadata=((CORRELATION_METADATA_KEY, "router-secret-1"), *as_caller(redact_suite, "u1")),
                timeout=30,
            )

    asyncio.run(call())
    seen = provider_saw(fake)
    assert "[REDACTED:github_token]" in seen and secret not in seen
    rows = audit_rows(redact_suite, "router-secret-1")
    assert [r["location"] for r in rows] == ["worker_processing"]
    metrics = httpx.get(redact_suite.metrics_url("router"), timeout=5).text
    assert 'goblin_security_secrets_detected_total{location="worker_processing"}' in metrics


def test_the_local_model_is_not_an_external_provider(redact_suite: Suite) -> None:
    async def call() -> None:
        async with redact_suite.grpc_aio_channel("router") as channel:
            await router_pb2_grpc.RouterStub(channel).Chat(
                common_pb2.ChatRequest(
                    model="local",
                    messages=[common_pb2.ChatMessage(role="user", content=f"ssn {SAMPLES['us_ssn']}")],
                    params=common_pb2.SamplingParams(max_tokens=2),
                ),
                metadata=((CORRELATION_METADATA_KEY, "router-local-1"), *as_caller(redact_suite, "u1")),
                timeout=60,
            )

    asyncio.run(call())
    assert audit_rows(redact_suite, "router-local-1") == []


def test_block_policy_refuses_and_sends_nothing(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, fake: FakeProviders
) -> None:
    suite = start(tmp_path_factory.mktemp("block"), new_database, redis_url, fake, GOBLIN_SECRET_POLICY="block")
    try:
        fake.reset()
        with suite.admin_client() as client:
            reply = client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"{SAMPLES['aws_access_key']} and {SAMPLES['us_ssn']}"}],
                },
                headers={"X-Correlation-ID": "block-1"},
            )
            clean = client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "nothing secret here"}],
                    "max_tokens": 4,
                },
            )
        assert reply.status_code == 400
        body = reply.json()
        assert body["error"] == "secrets_detected"
        assert "aws_access_key" in body["message"] and "us_ssn" in body["message"]
        assert SAMPLES["aws_access_key"] not in reply.text
        assert fake.requests("openai") and all("nothing secret" in json.dumps(r.body) for r in fake.requests("openai"))
        assert clean.status_code == 200
        rows = audit_rows(suite, "block-1")
        assert json.loads(rows[0]["details"])["action"] == "block"
    finally:
        suite.stop()
