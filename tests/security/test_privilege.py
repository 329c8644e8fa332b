"""No way up the privilege ladder: every route that issues a credential (API key, passkey, session,
account) refuses a narrower credential, or gives it at most what it has. Through the real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from goblin_tools.suite import Suite
from tests.integration.auth_support import (
    PASSWORD,
    admin_token,
    auth_suite_fixture,
    bearer,
    create_user,
    query,
    unique_email,
)
from tests.integration.webauthn_authenticator import SoftAuthenticator

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


@pytest.fixture
def origin(auth_suite: Suite) -> str:
    return f"https://localhost:{auth_suite.env['GOBLIN_GATEWAY_PORT']}"


def new_key(client: httpx.Client, token: str, scopes: list[str]) -> dict[str, Any]:
    reply = client.post("/auth/api-keys", json={"name": "narrow", "scopes": scopes}, headers=bearer(token))
    assert reply.status_code == 201, reply.text
    return reply.json()


def narrow_credentials(client: httpx.Client, auth_suite: Suite, token: str) -> dict[str, str]:
    """Every credential narrower than a full session of the same account."""
    expired = new_key(client, token, ["keys", "chat"])
    query(auth_suite, "UPDATE auth.api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1", expired["id"])
    return {
        "keys-only key": new_key(client, token, ["keys"])["key"],
        "chat-only key": new_key(client, token, ["chat"])["key"],
        "keys+chat key": new_key(client, token, ["keys", "chat"])["key"],
        "expired key": expired["key"],
    }


def test_no_narrow_credential_enrols_a_passkey(client: httpx.Client, auth_suite: Suite, origin: str) -> None:
    """A passkey signs in to a full session, so only a full session may enrol one."""
    _, pair = create_user(client)
    for label, credential in narrow_credentials(client, auth_suite, pair["access_token"]).items():
        options = client.post("/auth/passkeys/register/options", headers=bearer(credential))
        assert options.status_code in (401, 403), f"{label} got passkey options: {options.text}"
    # Nor can a narrow key finish a ceremony a full session started.
    started = client.post("/auth/passkeys/register/options", headers=bearer(pair["access_token"])).json()
    credential = SoftAuthenticator(origin).create(started["options"])
    keys_only = new_key(client, pair["access_token"], ["keys"])["key"]
    finished = client.post(
        "/auth/passkeys/register/verify",
        json={"challenge_id": started["challenge_id"], "credential": credential, "name": "sneaky"},
        headers=bearer(keys_only),
    )
    assert finished.status_code in (401, 403), finished.text
    assert client.get("/auth/passkeys", headers=bearer(pair["access_token"])).json()["data"] == []


def test_an_admins_narrow_key_enrols_no_passkey(client: httpx.Client, auth_suite: Suite) -> None:
    """The worst case of the ladder: an admin's ``keys`` key must not become an admin session."""
    token = admin_token(client)
    keys_only = new_key(client, token, ["keys"])["key"]
    assert client.post("/auth/passkeys/register/options", headers=bearer(keys_only)).status_code == 403
    admin_key = new_key(client, token, ["keys", "admin"])["key"]
    assert client.post("/auth/passkeys/register/options", headers=bearer(admin_key)).status_code == 403


def test_a_passkey_enrolled_by_a_full_session_signs_in_as_no_more(client: httpx.Client, origin: str) -> None:
    _, pair = create_user(client)
    authenticator = SoftAuthenticator(origin)
    options = client.post("/auth/passkeys/register/options", headers=bearer(pair["access_token"])).json()
    verified = client.post(
        "/auth/passkeys/register/verify",
        json={"challenge_id": options["challenge_id"], "credential": authenticator.create(options["options"])},
        headers=bearer(pair["access_token"]),
    )
    assert verified.status_code == 201, verified.text
    login = client.post("/auth/passkeys/login/options").json()
    signed_in = client.post(
        "/auth/passkeys/login/verify",
        json={"challenge_id": login["challenge_id"], "credential": authenticator.get(login["options"])},
    )
    assert signed_in.status_code == 200, signed_in.text
    who = client.get("/auth/me", headers=bearer(signed_in.json()["access_token"])).json()
    assert who["role"] == "user" and who["user_id"] == pair["user"]["id"], "a user's passkey is never an admin"
    assert client.get("/auth/tenants", headers=bearer(signed_in.json()["access_token"])).status_code == 403


def test_no_narrow_credential_issues_a_wider_key(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    creds = narrow_credentials(client, auth_suite, pair["access_token"])
    for label, credential in creds.items():
        for scopes in (["*"], ["admin"], ["keys", "chat", "admin"]):
            reply = client.post("/auth/api-keys", json={"name": "w", "scopes": scopes}, headers=bearer(credential))
            assert reply.status_code in (401, 403), f"{label} made a {scopes} key: {reply.text}"
    # What a narrow key may make is at most itself.
    made = client.post(
        "/auth/api-keys", json={"name": "same", "scopes": ["keys"]}, headers=bearer(creds["keys-only key"])
    )
    assert made.status_code == 201 and made.json()["scopes"] == ["keys"]
    assert client.post("/auth/api-keys", json={"name": "d"}, headers=bearer(creds["keys-only key"])).status_code == 403


def test_no_narrow_credential_creates_accounts_or_sessions(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    admin = admin_token(client)
    admin_keys = {
        "admin's keys-only key": new_key(client, admin, ["keys"])["key"],
        "admin's chat key": new_key(client, admin, ["chat"])["key"],
    }
    user_creds = {"user session": pair["access_token"], **narrow_credentials(client, auth_suite, pair["access_token"])}
    for label, credential in {**admin_keys, **user_creds}.items():
        for role in ("user", "admin"):
            reply = client.post(
                "/auth/register",
                json={"email": unique_email("ladder"), "password": PASSWORD, "role": role},
                headers=bearer(credential),
            )
            assert reply.status_code in (401, 403), f"{label} registered a {role}: {reply.text}"
        # A bearer credential is not a refresh token: it buys no session.
        refreshed = client.post("/auth/refresh", json={"refresh_token": credential})
        assert refreshed.status_code in (400, 401), f"{label} refreshed into a session"
        for route in ("/auth/tenants", "/auth/signing-keys/rotate"):
            assert client.post(route, json={"name": "t"}, headers=bearer(credential)).status_code in (401, 403, 422)


def test_an_admins_key_creates_no_account(client: httpx.Client) -> None:
    """A new account signs in to a full session: an admin's key (even ``admin`` or ``*``) making one,
    with a password its holder chose, would buy that holder every scope the key lacks."""
    token = admin_token(client)
    for scopes in (["admin"], ["keys", "admin"], ["*"]):
        key = new_key(client, token, scopes)["key"]
        for role in ("user", "admin"):
            reply = client.post(
                "/auth/register",
                json={"email": unique_email("ladder"), "password": PASSWORD, "role": role},
                headers=bearer(key),
            )
            assert reply.status_code == 403, f"an admin's {scopes} key registered a {role}: {reply.text}"
    made = client.post("/auth/register", json={"email": unique_email(), "password": PASSWORD}, headers=bearer(token))
    assert made.status_code == 201, "an admin's session still creates accounts"
