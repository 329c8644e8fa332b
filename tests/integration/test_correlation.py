"""The correlation id a client sends the gateway reaches every backend a request touches, in metadata.

It is not a field of any request message: the gateway's gRPC clients put it in ``x-correlation-id``
metadata, each server's interceptor makes it the call's, and the router's own calls carry it on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from goblin_tools.suite import Suite, start_suite


@pytest.fixture(scope="module")
def debug_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    """A suite logging at DEBUG, where every gRPC server writes one line per call it handled."""
    suite = start_suite(
        tmp_path_factory.mktemp("correlation"), DATABASE_URL=new_database(), REDIS_URL=redis_url, LOG_LEVEL="DEBUG"
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


def calls_logged(suite: Suite, correlation_id: str) -> set[tuple[str, str]]:
    """(service, gRPC method) of every call a backend logged under ``correlation_id``."""
    calls = set()
    for line in suite.log_lines():
        if correlation_id not in line or not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("correlation_id") == correlation_id and "grpc_method" in entry:
            calls.add((entry["service"], f"{entry['grpc_service']}/{entry['grpc_method']}"))
    return calls


def test_a_correlation_id_sent_to_the_gateway_reaches_auth_router_and_inference(debug_suite: Suite) -> None:
    with debug_suite.admin_client() as client:
        # The first listing in a fresh suite: the router asks the inference service for its models.
        reply = client.get("/v1/models", headers={"X-Correlation-ID": "trail-42"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-Correlation-ID"] == "trail-42"
    expected = {
        ("auth", "goblin.v1.Auth/Authenticate"),
        ("router", "goblin.v1.Router/ListModels"),
        ("inference", "goblin.v1.Inference/ListModels"),
    }
    deadline = time.monotonic() + 10
    while not expected <= calls_logged(debug_suite, "trail-42") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert expected <= calls_logged(debug_suite, "trail-42"), debug_suite.log_tail()
