"""Property-based fuzzing of every route in the gateway's OpenAPI document: no input gets a 5xx.

Bounded: a few examples per operation, against a suite whose model context is small so that the odd
valid chat request with a huge max_tokens still ends quickly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from tests.suite import Suite, start_suite

EXAMPLES_PER_OPERATION = 8


@pytest.fixture(scope="module")
def fuzz_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("fuzz"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_INFERENCE_N_CTX="384",
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def http(fuzz_suite: Suite) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = str(fuzz_suite.ca_file)
    session.headers["Authorization"] = f"Bearer {fuzz_suite.admin_key}"
    yield session
    session.close()


@pytest.fixture(scope="module")
def gateway_schema(fuzz_suite: Suite, http: requests.Session) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_suite.gateway_url}/openapi.json", verify=str(fuzz_suite.ca_file))


def test_the_document_describes_every_route(fuzz_suite: Suite, http: requests.Session) -> None:
    paths = http.get(f"{fuzz_suite.gateway_url}/openapi.json", timeout=10).json()["paths"]
    for route in (
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/models",
        "/v1/embeddings",
        "/invoke",
        "/health",
        "/health/ready",
        "/health/all",
        "/api/health",
        "/auth/me",
    ):
        assert route in paths, route


schema = schemathesis.pytest.from_fixture("gateway_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error(case: schemathesis.Case, fuzz_suite: Suite, http: requests.Session) -> None:
    response = case.call(base_url=fuzz_suite.gateway_url, session=http, timeout=120)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert {"error", "message", "correlation_id"} <= set(body), body
