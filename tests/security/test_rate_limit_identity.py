"""Whom the rate limiter charges (issue 12, item 4), against a running suite with small real limits.

A credential counts only once the gateway has verified it: made-up bearer strings are charged to the
client's IP like anonymous requests (they used to get a fresh window each), and every verified
credential of one user also counts against that user's ceiling (``GOBLIN_RATE_LIMIT_USER``), so a
second key does not double the user's capacity. Each test speaks from its own client address
(X-Forwarded-For from a trusted proxy, 127.0.0.1), so their windows stay apart.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from goblin_tools.suite import Suite, start_suite
from tests.security.envelope import assert_error_envelope

DEFAULT_LIMIT = 3  # per minute, per verified credential or per IP
USER_LIMIT = 5  # per minute, across all of one user's credentials
AUTH_LIMIT = 6  # per minute, per IP
HEALTH_LIMIT = 3  # per second
PASSWORD = "correct horse battery staple 42"
_addresses = (f"203.0.113.{i}" for i in itertools.count(1))


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("identity"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_RATE_LIMIT_DEFAULT=f"{DEFAULT_LIMIT}/minute",
        GOBLIN_RATE_LIMIT_USER=f"{USER_LIMIT}/minute",
        GOBLIN_RATE_LIMIT_AUTH=f"{AUTH_LIMIT}/minute",
        GOBLIN_RATE_LIMIT_HEALTH=f"{HEALTH_LIMIT}/second",
        GOBLIN_TRUSTED_PROXIES="127.0.0.1/32",
        # Accounts are opened by their owners here: only an admin's signed-in session may open one for
        # someone else, and this suite's admin has no password.
        GOBLIN_SELF_REGISTRATION="true",
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture
def client(limited: Suite) -> Iterator[httpx.Client]:
    """A client at an address no other test uses (the suite trusts 127.0.0.1 as a proxy)."""
    with limited.client(headers={"X-Forwarded-For": next(_addresses)}, timeout=30) as http:
        yield http


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def new_user(client: httpx.Client) -> str:
    """A fresh user's id (self-registered): each test's user ceiling starts empty."""
    email = f"limits-{uuid.uuid4().hex[:12]}@example.com"
    registered = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return registered.json()["id"]


def new_key(client: httpx.Client, admin_key: str, user_id: str) -> str:
    """A key of ``user_id``, verified once (GET /auth/me) so the gateway knows it."""
    created = client.post(
        "/auth/api-keys", json={"name": "limits", "scopes": ["chat"], "user_id": user_id}, headers=bearer(admin_key)
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert client.get("/auth/me", headers=bearer(key)).status_code == 200
    return key


def test_made_up_bearer_strings_share_the_ip_window(client: httpx.Client) -> None:
    replies = [client.get("/v1/unknown", headers=bearer(f"made-up-{i}")) for i in range(DEFAULT_LIMIT + 1)]
    assert [r.status_code for r in replies] == [404] * DEFAULT_LIMIT + [429]
    body = assert_error_envelope(replies[-1])
    assert body["error"] == "rate_limit_exceeded"
    assert client.get("/v1/unknown").status_code == 429, "anonymous requests are in the same window"


def test_unauthenticated_health_detail_is_limited_whatever_the_token(client: httpx.Client) -> None:
    time.sleep(1.1)  # an empty one-second window
    replies = [client.get("/health/all", headers=bearer(f"guess-{i}")) for i in range(HEALTH_LIMIT + 1)]
    assert [r.status_code == 429 for r in replies] == [False] * HEALTH_LIMIT + [True]


def test_unauthenticated_login_is_limited(client: httpx.Client) -> None:
    replies = [
        client.post(
            "/auth/login", json={"email": f"nobody{i}@example.com", "password": "wrong"}, headers=bearer(f"x{i}")
        )
        for i in range(AUTH_LIMIT + 1)
    ]
    assert [r.status_code == 429 for r in replies] == [False] * AUTH_LIMIT + [True]


def test_a_second_key_does_not_raise_the_users_ceiling(client: httpx.Client, limited: Suite) -> None:
    user = new_user(client)
    first, second = (new_key(client, limited.admin_key, user) for _ in range(2))
    with limited.client(headers={"X-Forwarded-For": next(_addresses)}, timeout=30) as elsewhere:
        replies = [elsewhere.get("/v1/unknown", headers=bearer(first)) for _ in range(DEFAULT_LIMIT)]
        replies += [elsewhere.get("/v1/unknown", headers=bearer(second)) for _ in range(DEFAULT_LIMIT)]
    # Each key stays within its own limit (3); together they pass the user's (5) at the 6th request.
    assert [r.status_code for r in replies] == [404] * USER_LIMIT + [429]
    body = assert_error_envelope(replies[-1])
    assert body["message"] == f"Rate limit exceeded: {USER_LIMIT} per 1 minute"


def test_a_verified_key_is_not_charged_to_its_ip(client: httpx.Client, limited: Suite) -> None:
    key = new_key(client, limited.admin_key, new_user(client))
    with limited.client(headers={"X-Forwarded-For": next(_addresses)}, timeout=30) as elsewhere:
        with_key = [elsewhere.get("/v1/unknown", headers=bearer(key)) for _ in range(DEFAULT_LIMIT)]
        anonymous = [elsewhere.get("/v1/unknown") for _ in range(DEFAULT_LIMIT)]
    assert [r.status_code for r in with_key + anonymous] == [404] * (2 * DEFAULT_LIMIT)
    assert with_key[-1].headers["X-RateLimit-Remaining"] == "0"
