"""Property-based fuzzing of every route in the gateway's OpenAPI document: no input gets a 5xx.

Bounded: a few examples per operation, against a suite whose model context is small so that the odd
valid chat request with a huge max_tokens still ends quickly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from goblin_tools.suite import Suite, start_suite

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
    # Environment CA bundles (REQUESTS_CA_BUNDLE) would override `verify`; this session trusts our CA only.
    session.trust_env = False
    session.verify = str(fuzz_suite.ca_file)
    session.headers["Authorization"] = f"Bearer {fuzz_suite.admin_key}"
    yield session
    session.close()


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
        "/auth/login",
        "/.well-known/jwks.json",
    ):
        assert route in paths, route


def test_no_input_gets_a_server_error(fuzz_suite: Suite, http: requests.Session) -> None:
    """Every operation, a bounded number of generated cases each (hypothesis drives schemathesis'
    strategies directly: its pytest plugin does not load under this pytest)."""
    raw = http.get(f"{fuzz_suite.gateway_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=fuzz_suite.gateway_url, session=http, timeout=120, verify=str(fuzz_suite.ca_file)
            )
            where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            if response.status_code >= 500:
                failures.append(where)
            elif response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    failures.append(f"{where} (not JSON)")
                    return
                if not isinstance(body, dict) or not {"error", "message", "correlation_id"} <= set(body):
                    failures.append(f"{where} (not the JSON error shape)")

        exercise()
    assert operations >= 10
    assert not failures, "\n".join(failures[:20])
