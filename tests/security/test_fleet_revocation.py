"""Two real gateway replicas over one auth service and one Redis: a change made through gateway A (an
account switched off or demoted, an API key revoked, a sign-out, a reused refresh token) is refused
by gateway B at once, although B had cached the credential and its cache lives a minute. With Redis stopped, B no longer
hears A and keeps cached principals for a second at most; when Redis is back, B resubscribes and
forgets everything it cached. A non-admin cannot make the fleet forget anyone else's credentials."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from goblin_tools.faults import Stores
from goblin_tools.suite import Suite, start_suite
from services.gateway import caches, invalidation
from services.gateway.invalidation import CHANNEL
from tests.integration.auth_support import ADMIN_PASSWORD, KEK_TEXT, admin_token, bearer, create_user, query
from tests.security.fleet import second_gateway

# Long on purpose: a refusal within a second cannot be the cache lapsing.
CACHE_TTL_S = 60
# "At once": B is polled this long at most (the message crosses Redis in milliseconds).
AT_ONCE_S = 1.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Suite, Suite, Stores]]:
    """The suite on stores of its own (a test stops its Redis), and a second gateway beside it."""
    base = tmp_path_factory.mktemp("fleet")
    stores = Stores(base / "stores")
    suite = start_suite(
        base / "suite",
        DATABASE_URL=stores.database_url,
        REDIS_URL=stores.redis_url,
        GOBLIN_ADMIN_PASSWORD=ADMIN_PASSWORD,
        GOBLIN_AUTH_KEY_ENCRYPTION_KEY=KEK_TEXT,
        GOBLIN_AUTH_CACHE_TTL_S=str(CACHE_TTL_S),
    )
    try:
        suite.wait_ready()
        with second_gateway(suite) as b:
            yield suite, b, stores
    finally:
        suite.stop()
        stores.close()


@pytest.fixture
def clients(fleet: tuple[Suite, Suite, Stores]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    a, b, _ = fleet
    with a.client() as ca, b.client() as cb:
        yield ca, cb


def user_with_key(client: httpx.Client, role: str = "user") -> tuple[dict, str]:
    _, pair = create_user(client, role=role)
    reply = client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["chat", "keys"]}, headers=bearer(pair["access_token"])
    )
    assert reply.status_code == 201, reply.text
    return pair, reply.json()["key"]


def status(client: httpx.Client, credential: str, path: str = "/auth/me") -> int:
    return client.get(path, headers=bearer(credential)).status_code


def refused_within(client: httpx.Client, credential: str, bound_s: float, path: str = "/auth/me") -> int:
    """Poll ``path`` with ``credential`` until it is refused, for ``bound_s`` at most; the status."""
    deadline = time.monotonic() + bound_s
    while True:
        code = status(client, credential, path)
        if code != 200 or time.monotonic() >= deadline:
            return code
        time.sleep(0.05)


def authenticate_calls(suite: Suite) -> float:
    """How many Authenticate calls the auth service has answered (its Prometheus counter)."""
    text = httpx.get(suite.metrics_url("auth"), timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("goblin_grpc_server_handled_total{") and 'grpc_method="Authenticate"' in line
    )


def warm(suite: Suite, client: httpx.Client, *credentials: str) -> None:
    """Each credential verified by this replica and then served from its cache (auth is not asked
    again): what follows is a test of forgetting, not of a cache that never held anything."""
    for credential in credentials:
        assert status(client, credential) == 200
        before = authenticate_calls(suite)
        assert status(client, credential) == 200
        assert authenticate_calls(suite) == before, "the replica did not cache the principal"


def subscribed_now(client: httpx.Client) -> bool:
    return "goblin_gateway_principal_invalidation_subscribed 1.0" in client.get("/metrics").text


def wait_subscribed(client: httpx.Client, timeout_s: float = 30) -> None:
    """Until the replica's metrics say it hears its peers."""
    deadline = time.monotonic() + timeout_s
    while not subscribed_now(client):
        assert time.monotonic() < deadline, "the replica did not subscribe"
        time.sleep(0.1)


@pytest.fixture
def subscribed(clients: tuple[httpx.Client, httpx.Client]) -> tuple[httpx.Client, httpx.Client]:
    a, b = clients
    for client in (a, b):
        if client.base_url not in _settled:
            wait_subscribed(client)
            _settled.add(client.base_url)
    return a, b


_settled: set[httpx.URL] = set()


def test_deactivation_through_a_is_refused_by_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = subscribed
    pair, key = user_with_key(a)
    warm(fleet[0], b, pair["access_token"], key)
    changed = a.patch(f"/auth/users/{pair['user']['id']}", json={"active": False}, headers=bearer(admin_token(a)))
    assert changed.status_code == 200, changed.text
    for credential in (pair["access_token"], key):
        assert refused_within(b, credential, AT_ONCE_S) == 401


def test_a_key_revoked_through_a_is_refused_by_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = subscribed
    pair, key = user_with_key(a)
    [listed] = [k for k in a.get("/auth/api-keys", headers=bearer(key)).json()["data"]]
    warm(fleet[0], b, pair["access_token"], key)
    assert a.delete(f"/auth/api-keys/{listed['id']}", headers=bearer(pair["access_token"])).status_code == 200
    assert refused_within(b, key, AT_ONCE_S) == 401
    assert status(b, pair["access_token"]) == 200, "only the key was revoked"


def test_a_sign_out_through_a_is_refused_by_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = subscribed
    pair, key = user_with_key(a)
    warm(fleet[0], b, pair["access_token"], key)
    assert a.post("/auth/logout", headers=bearer(pair["access_token"])).json() == {"revoked": True}
    assert refused_within(b, pair["access_token"], AT_ONCE_S) == 401
    assert status(b, key) == 200, "a sign-out ends the session, not the account's keys"


def test_a_sign_out_by_refresh_token_alone_is_refused_by_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    """No gateway saw which session the refresh token named: auth tells every replica itself."""
    a, b = subscribed
    pair, _ = user_with_key(a)
    warm(fleet[0], a, pair["access_token"])
    warm(fleet[0], b, pair["access_token"])
    assert a.post("/auth/logout", json={"refresh_token": pair["refresh_token"]}).json() == {"revoked": True}
    for replica in (a, b):
        assert refused_within(replica, pair["access_token"], AT_ONCE_S) == 401


def test_a_reused_refresh_token_ends_the_session_on_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = subscribed
    pair, _ = user_with_key(a)
    fresh = a.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert fresh.status_code == 200, fresh.text
    warm(fleet[0], b, fresh.json()["access_token"])
    reused = a.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    assert refused_within(b, fresh.json()["access_token"], AT_ONCE_S) == 401


def test_a_demotion_through_a_takes_admin_rights_away_on_b_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = subscribed
    pair, _ = user_with_key(a, role="admin")
    token = pair["access_token"]
    warm(fleet[0], b, token)
    assert status(b, token, "/auth/tenants") == 200  # an admin, cached as one on B
    demoted = a.patch(f"/auth/users/{pair['user']['id']}", json={"role": "user"}, headers=bearer(admin_token(a)))
    assert demoted.status_code == 200, demoted.text
    # What B itself decides from its cached principal (auth re-checks admin calls on its side too):
    # the demotion ended the session (its token claimed admin), so B refuses it or sees a user.
    deadline = time.monotonic() + AT_ONCE_S
    while (me := b.get("/auth/me", headers=bearer(token))).status_code == 200 and me.json()["role"] == "admin":
        assert time.monotonic() < deadline, "B still holds the demoted admin's principal"
        time.sleep(0.05)
    assert status(b, token, "/auth/tenants") in (401, 403)


def test_a_tenant_change_through_a_makes_b_forget_its_principals_at_once(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    """Principals carry the tenant's quotas and budget: after a change B asks auth again."""
    a, b = subscribed
    admin = bearer(admin_token(a))
    created = a.post("/auth/tenants", json={"name": f"fleet {uuid.uuid4().hex[:8]}"}, headers=admin)
    assert created.status_code == 201, created.text
    tenant = created.json()["id"]
    _, pair = create_user(a, tenant_id=tenant)
    warm(fleet[0], b, pair["access_token"])
    changed = a.patch(f"/auth/tenants/{tenant}", json={"requests_per_day": 1000}, headers=admin)
    assert changed.status_code == 200, changed.text
    deadline = time.monotonic() + AT_ONCE_S
    while True:
        before = authenticate_calls(fleet[0])
        assert status(b, pair["access_token"]) == 200
        if authenticate_calls(fleet[0]) > before:
            break  # B no longer had it: it asked auth, which answers with the new quota
        assert time.monotonic() < deadline, "B still serves the principal cached before the change"
        time.sleep(0.05)


def test_a_non_admin_cannot_make_the_fleet_forget_anyone_else(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    """Only what auth allowed is published: a refused change publishes nothing, so an attacker cannot
    use the feed to flush other users' cached principals (or learn anything from it)."""
    a, b = subscribed
    victim, victim_key = user_with_key(a)
    [victim_key_row] = a.get("/auth/api-keys", headers=bearer(victim_key)).json()["data"]
    attacker, attacker_key = user_with_key(a)
    listener = redis.Redis.from_url(fleet[2].redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CHANNEL)
    try:
        for credential in (attacker["access_token"], attacker_key, "not-a-credential", ""):
            headers = bearer(credential) if credential else {}
            attempts = [
                a.patch(f"/auth/users/{victim['user']['id']}", json={"active": False}, headers=headers),
                a.patch("/auth/tenants/default", json={"requests_per_day": 1}, headers=headers),
                a.delete(f"/auth/api-keys/{victim_key_row['id']}", headers=headers),
            ]
            for reply in attempts:
                assert reply.status_code in (400, 401, 403, 404), reply.text
            # Signing out with a refresh token that ends nothing publishes nothing either.
            logout = a.post("/auth/logout", json={"refresh_token": "forged"}, headers=headers)
            assert logout.status_code in (200, 401) and logout.json().get("revoked") in (False, None), logout.text
        time.sleep(0.3)
        assert listener.get_message(timeout=0.5) is None, "a refused change was published"
    finally:
        listener.close()
    warm(fleet[0], b, victim["access_token"], victim_key)


def test_with_redis_stopped_b_refuses_within_the_fallback_bound(
    fleet: tuple[Suite, Suite, Stores], subscribed: tuple[httpx.Client, httpx.Client]
) -> None:
    suite, _, stores = fleet
    a, b = subscribed
    pair, key = user_with_key(a)
    other, other_key = user_with_key(a)
    warm(fleet[0], b, pair["access_token"], key, other_key)
    stores.stop_redis()
    try:
        # A change B cannot hear of (Redis is away): made in auth's own table, as a peer's change is.
        query(suite, "UPDATE auth.users SET is_active = false WHERE id = $1", pair["user"]["id"])
        bound = invalidation.LIVENESS_S + caches.UNSUBSCRIBED_TTL_S + AT_ONCE_S
        for credential in (key, pair["access_token"]):
            # 401, or 503 while auth itself cannot reach Redis for a session check: never the cached 200.
            assert refused_within(b, credential, bound) in (401, 503)
        assert status(b, other_key) == 200, "an API key of a live account still works with Redis away"
        assert "goblin_gateway_principal_invalidation_subscribed 0.0" in b.get("/metrics").text
    finally:
        stores.start_redis()  # the same socket and data: Redis is back
    wait_subscribed(b)
    # Subscribed again: the fleet hears changes at once again.
    warm(fleet[0], b, other_key)
    changed = a.patch(f"/auth/users/{other['user']['id']}", json={"active": False}, headers=bearer(admin_token(a)))
    assert changed.status_code == 200, changed.text
    assert refused_within(b, other_key, AT_ONCE_S) == 401
    metrics = b.get("/metrics").text
    assert 'goblin_gateway_principal_invalidations_total{origin="peer"}' in metrics
