"""Revocations that hold: a disabled account's credentials stop at once, and ended sessions stay ended
when Redis loses its data (Postgres keeps the revocation; Redis only caches it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import redis

from goblin.v1 import auth_pb2
from goblin_tools.suite import Suite
from tests.integration.auth_support import CACHE_TTL_S, auth_stub, auth_suite_fixture, bearer, create_user, query

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


def verifies(auth_suite: Suite, credential: str) -> bool:
    """Whether the auth service itself (past any gateway cache) accepts ``credential`` now."""
    channel, stub = auth_stub(auth_suite)
    with channel:
        try:
            stub.Authenticate(auth_pb2.AuthenticateRequest(credential=credential))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            return False
        return True


def flush_redis(auth_suite: Suite) -> None:
    redis.Redis.from_url(auth_suite.env["REDIS_URL"]).flushdb()


def test_a_disabled_account_is_refused_at_once(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    token = pair["access_token"]
    key = client.post("/auth/api-keys", json={"name": "k", "scopes": ["chat"]}, headers=bearer(token)).json()["key"]
    assert verifies(auth_suite, token) and verifies(auth_suite, key)

    query(auth_suite, "UPDATE auth.users SET is_active = false WHERE id = $1", pair["user"]["id"])
    assert not verifies(auth_suite, token), "a disabled account's access token still verifies"
    assert not verifies(auth_suite, key), "a disabled account's API key still verifies"
    time.sleep(CACHE_TTL_S + 0.2)  # the gateway's cache of the principal, filled before, has lapsed
    for credential in (token, key):
        assert client.get("/auth/me", headers=bearer(credential)).status_code == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401, refreshed.text


def test_a_signed_out_session_stays_out_after_redis_loses_its_data(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    token = pair["access_token"]
    assert client.post("/auth/logout", headers=bearer(token)).json() == {"revoked": True}
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401

    flush_redis(auth_suite)
    assert not verifies(auth_suite, token), "the revoked session came back with an empty Redis"
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    # The miss refilled the cache from Postgres.
    assert redis.Redis.from_url(auth_suite.env["REDIS_URL"]).keys("goblin:auth:revoked-session:*")


def test_a_session_revoked_for_refresh_reuse_stays_revoked_after_a_flush(
    client: httpx.Client, auth_suite: Suite
) -> None:
    _, pair = create_user(client)
    first = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status_code == 200
    reused = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    flush_redis(auth_suite)
    for token in (pair["access_token"], first.json()["access_token"]):
        assert not verifies(auth_suite, token)
    assert client.post("/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}).status_code == 401


def test_a_live_session_still_verifies_after_a_flush(client: httpx.Client, auth_suite: Suite) -> None:
    """The fallback to Postgres refuses only what was revoked."""
    _, pair = create_user(client)
    flush_redis(auth_suite)
    assert verifies(auth_suite, pair["access_token"])
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
