"""An admin switches an account off through the API, and it is off at once: its API keys, its access
tokens and its refresh tokens stop on the gateway that took the change, without waiting for that
gateway's principal cache to lapse. Only an admin (with an admin-scoped credential) may do it, never to
themselves, and switching an account back on does not revive its ended sessions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from goblin_tools.suite import Suite
from tests.integration.auth_support import (
    PASSWORD,
    admin_token,
    auth_suite_fixture,
    bearer,
    create_user,
    login,
)

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


def user_with_key(client: httpx.Client, role: str = "user") -> tuple[str, dict, str]:
    """A new account: its email, its first token pair and an API key it made."""
    email, pair = create_user(client, role=role)
    key = client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["chat", "keys"]}, headers=bearer(pair["access_token"])
    ).json()["key"]
    return email, pair, key


def test_deactivation_through_the_api_stops_every_credential_at_once(client: httpx.Client) -> None:
    email, pair, key = user_with_key(client)
    user_id = pair["user"]["id"]
    for credential in (pair["access_token"], key):  # both verified, so the gateway caches them
        assert client.get("/auth/me", headers=bearer(credential)).status_code == 200

    reply = client.patch(f"/auth/users/{user_id}", json={"active": False}, headers=bearer(admin_token(client)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["active"] is False and reply.json()["id"] == user_id

    # No sleep: the gateway that took the change forgets the account's cached principals.
    for credential in (pair["access_token"], key):
        refused = client.get("/auth/me", headers=bearer(credential))
        assert refused.status_code == 401, refused.text
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert client.post("/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401


def test_reactivation_lets_the_account_sign_in_but_keeps_ended_sessions_ended(client: httpx.Client) -> None:
    email, pair, key = user_with_key(client)
    user_id = pair["user"]["id"]
    admin = bearer(admin_token(client))
    assert client.patch(f"/auth/users/{user_id}", json={"active": False}, headers=admin).status_code == 200
    back = client.patch(f"/auth/users/{user_id}", json={"active": True}, headers=admin)
    assert back.status_code == 200 and back.json()["active"] is True

    fresh = login(client, email)
    assert client.get("/auth/me", headers=bearer(fresh["access_token"])).status_code == 200
    assert client.get("/auth/me", headers=bearer(key)).status_code == 200, "an API key is the account's, not a session"
    # The sessions that deactivation ended stay ended.
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_demoting_an_admin_takes_the_power_away_at_once(client: httpx.Client) -> None:
    _, pair, _ = user_with_key(client, role="admin")
    other = bearer(pair["access_token"])
    assert client.get("/auth/tenants", headers=other).status_code == 200  # an admin, cached as one

    demoted = client.patch(
        f"/auth/users/{pair['user']['id']}", json={"role": "user"}, headers=bearer(admin_token(client))
    )
    assert demoted.status_code == 200 and demoted.json()["role"] == "user"
    assert client.get("/auth/tenants", headers=other).status_code in (401, 403)


def test_a_demoted_admins_access_token_no_longer_claims_admin(client: httpx.Client) -> None:
    """An access token carries the role it was issued with, and services take admin rights from the
    principal alone: a demotion ends the account's sessions, as switching it off does, so no
    principal says admin after it (its API keys read the role afresh and stay valid)."""
    _, pair, key = user_with_key(client, role="admin")
    token = bearer(pair["access_token"])
    assert client.get("/auth/me", headers=token).json()["role"] == "admin"
    demoted = client.patch(
        f"/auth/users/{pair['user']['id']}", json={"role": "user"}, headers=bearer(admin_token(client))
    )
    assert demoted.status_code == 200, demoted.text
    me = client.get("/auth/me", headers=token)
    assert me.status_code == 401 or me.json()["role"] == "user", me.text
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert client.get("/auth/me", headers=bearer(key)).json()["role"] == "user"


def test_only_an_admin_with_an_admin_credential_changes_an_account(client: httpx.Client) -> None:
    _, victim, _ = user_with_key(client)
    _, user, user_key = user_with_key(client)
    path = f"/auth/users/{victim['user']['id']}"
    for credential in (user["access_token"], user_key):
        refused = client.patch(path, json={"active": False}, headers=bearer(credential))
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] in ("forbidden", "insufficient_scope", "permission_denied")
    # An admin's key scoped below admin cannot either.
    admin = bearer(admin_token(client))
    chat_key = client.post("/auth/api-keys", json={"name": "c", "scopes": ["chat"]}, headers=admin).json()["key"]
    assert client.patch(path, json={"active": False}, headers=bearer(chat_key)).status_code == 403
    # A user cannot promote themselves either.
    promote = client.patch(f"/auth/users/{user['user']['id']}", json={"role": "admin"}, headers=bearer(user_key))
    assert promote.status_code == 403
    assert client.get("/auth/me", headers=bearer(victim["access_token"])).status_code == 200


def test_an_admin_cannot_switch_themselves_off_or_demote_themselves(client: httpx.Client) -> None:
    admin = bearer(admin_token(client))
    me = client.get("/auth/me", headers=admin).json()
    for change in ({"active": False}, {"role": "user"}):
        refused = client.patch(f"/auth/users/{me['user_id']}", json=change, headers=admin)
        assert refused.status_code in (400, 403), refused.text
        assert "error" in refused.json()
    assert client.get("/auth/tenants", headers=admin).status_code == 200


@pytest.mark.parametrize(
    "user_id, body, status",
    [
        ("00000000-0000-4000-8000-000000000000", {"active": False}, 404),
        ("not a user id", {"active": False}, 400),
        ("x" * 300, {"active": False}, 400),
        ("{victim}", {}, 400),
        ("{victim}", {"active": "no"}, 400),
        ("{victim}", {"role": "root"}, 400),
        ("{victim}", {"active": False, "tenant_id": "other"}, 400),
    ],
)
def test_bad_changes_are_clear_4xx(client: httpx.Client, user_id: str, body: dict, status: int) -> None:
    _, victim, _ = user_with_key(client)
    path = "/auth/users/" + user_id.replace("{victim}", victim["user"]["id"])
    reply = client.patch(path, json=body, headers=bearer(admin_token(client)))
    assert reply.status_code == status, reply.text
    assert "error" in reply.json()
    assert client.get("/auth/me", headers=bearer(victim["access_token"])).status_code == 200


def test_an_admin_key_may_switch_accounts_off_but_not_make_admins(client: httpx.Client) -> None:
    """Scopes only narrow: an admin-scoped key may take power away, but making an admin (a full
    session's power) needs a signed-in session, like creating an account."""
    admin = bearer(admin_token(client))
    admin_key = client.post("/auth/api-keys", json={"name": "a", "scopes": ["admin"]}, headers=admin).json()["key"]
    _, pair, _ = user_with_key(client)
    path = f"/auth/users/{pair['user']['id']}"
    promote = client.patch(path, json={"role": "admin"}, headers=bearer(admin_key))
    assert promote.status_code == 403, promote.text
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).json()["role"] == "user"
    assert client.patch(path, json={"active": False}, headers=bearer(admin_key)).status_code == 200
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 401
