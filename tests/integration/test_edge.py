"""The public edge over real HTTPS with real Redis: rate limits, headers, body limit, Redis failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from goblin_tools.embedded import EmbeddedRedis
from goblin_tools.suite import Suite, start_suite

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def edge_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own, so a test can stop it."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("edge-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], edge_redis: EmbeddedRedis
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("edge"),
        DATABASE_URL=new_database(),
        REDIS_URL=edge_redis.url,
        GOBLIN_RATE_LIMIT_HEALTH="3/second",
        GOBLIN_RATE_LIMIT_DEFAULT="4/minute",
        GOBLIN_RATE_LIMIT_AUTH="3/minute",
        GOBLIN_MAX_BODY_BYTES="65536",
        GOBLIN_MAX_CHAT_BODY_BYTES="65536",
    )
    # wait_ready polls /health/ready; with 3/second that is fine at its 5 polls a second plus retries.
    try:
        suite.wait_ready()
        time.sleep(1.1)  # let the health window empty before the tests count
        yield suite
    finally:
        suite.stop()


def test_limit_is_hit_exactly_at_n_plus_1_and_the_window_resets(edge: Suite) -> None:
    with edge.client() as client:
        time.sleep(1.1)
        replies = [client.get("/health") for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert [r.headers["X-RateLimit-Remaining"] for r in replies[:3]] == ["2", "1", "0"]
        assert all(r.headers["X-RateLimit-Limit"] == "3" for r in replies)
        refused = replies[3]
        body = refused.json()
        assert body["error"] == "rate_limit_exceeded"
        assert body["message"] == "Rate limit exceeded: 3 per 1 second"
        assert body["retry_after"] == int(refused.headers["Retry-After"]) >= 1
        assert body["correlation_id"] == refused.headers["X-Correlation-ID"]
        assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())
        time.sleep(1.1)
        assert client.get("/health").status_code == 200


def test_each_verified_api_key_has_its_own_window_and_made_up_ones_share_the_ips(edge: Suite) -> None:
    admin = {"Authorization": f"Bearer {edge.admin_key}"}
    with edge.client() as client:
        # The gateway charges a key to itself once it has verified it: until then, to the IP (1 of 4).
        assert client.get("/v1/models", headers=admin).status_code == 200
        verified = [client.get("/v1/unknown", headers=admin) for _ in range(5)]
        made_up = [client.get("/v1/unknown", headers={"Authorization": f"Bearer key-{i}"}) for i in range(4)]
    assert [r.status_code for r in verified] == [404, 404, 404, 404, 429]
    assert [r.status_code for r in made_up] == [404, 404, 404, 429]


def test_spoofed_forwarded_for_is_ignored(edge: Suite) -> None:
    with edge.client() as client:
        time.sleep(1.1)
        for _ in range(3):
            assert client.get("/health").status_code == 200
        spoofed = [client.get("/health", headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(3)]
    assert [r.status_code for r in spoofed] == [429, 429, 429]


def test_auth_routes_are_limited_per_ip_whatever_the_token(edge: Suite) -> None:
    with edge.client() as client:
        replies = [client.get("/auth/me", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(4)]
    assert [r.status_code for r in replies] == [401, 401, 401, 429]


def test_security_headers_on_every_kind_of_response(edge: Suite) -> None:
    time.sleep(1.1)
    with edge.client() as client:
        responses = [client.get("/health"), client.get("/nope", headers={"Authorization": "Bearer hdr"})]
        responses += [client.get("/health") for _ in range(3)]  # the last is a 429
    assert responses[-1].status_code == 429
    for reply in responses:
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers[name] == value, (reply.url, name)
        assert "default-src 'none'" in reply.headers["content-security-policy"]


def test_bodies_over_the_limit_get_413(edge: Suite) -> None:
    big = b'{"model": "local", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}'
    with edge.client(headers={"Authorization": "Bearer body-limit"}) as client:
        declared = client.post("/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    for reply in (declared, streamed):
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"] == "payload_too_large"


def test_rate_limit_metrics_use_route_templates(edge: Suite) -> None:
    with edge.client() as client:
        time.sleep(1.1)
        text = client.get("/metrics").text
    assert 'http_requests_429_total{endpoint="/health"}' in text
    assert 'http_requests_429_total{endpoint="unmatched"}' in text or "/v1/unknown" not in text


def test_redis_down_fails_open_counted_never_500(edge: Suite, edge_redis: EmbeddedRedis) -> None:
    edge_redis.stop()
    with edge.client() as client:
        replies = [client.get("/health") for _ in range(6)]
        metrics = client.get("/metrics").text
    assert [r.status_code for r in replies] == [200] * 6
    assert "X-RateLimit-Limit" not in replies[0].headers
    assert 'goblin_rate_limit_storage_errors_total{behaviour="open"}' in metrics
