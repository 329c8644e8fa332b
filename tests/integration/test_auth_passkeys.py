"""Passkeys end to end: a software authenticator drives the real gateway routes over HTTPS, as a browser
would, against the real auth service with its challenges in Redis and credentials in Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from goblin_tools.suite import Suite
from tests.integration.auth_support import auth_suite_fixture, bearer, create_user, query
from tests.integration.webauthn_authenticator import SoftAuthenticator

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


@pytest.fixture
def origin(auth_suite: Suite) -> str:
    """What a browser on the gateway's own page puts in clientDataJSON."""
    return f"https://localhost:{auth_suite.env['GOBLIN_GATEWAY_PORT']}"


def enrol(client: httpx.Client, token: str, authenticator: SoftAuthenticator, name: str = "laptop") -> dict[str, Any]:
    options = client.post("/auth/passkeys/register/options", headers=bearer(token))
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json()["options"])
    verified = client.post(
        "/auth/passkeys/register/verify",
        json={"challenge_id": options.json()["challenge_id"], "credential": credential, "name": name},
        headers=bearer(token),
    )
    assert verified.status_code == 201, verified.text
    return verified.json()


def login_options(client: httpx.Client, email: str = "") -> dict[str, Any]:
    reply = client.post("/auth/passkeys/login/options", json={"email": email} if email else None)
    assert reply.status_code == 200, reply.text
    return reply.json()


def sign_in(client: httpx.Client, options: dict[str, Any], assertion: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/auth/passkeys/login/verify", json={"challenge_id": options["challenge_id"], "credential": assertion}
    )


def test_register_and_sign_in_with_a_passkey(client: httpx.Client, auth_suite: Suite, origin: str) -> None:
    email, pair = create_user(client)
    authenticator = SoftAuthenticator(origin)
    options = client.post("/auth/passkeys/register/options", headers=bearer(pair["access_token"])).json()
    public_key = options["options"]
    assert public_key["rp"]["id"] == "localhost" and public_key["user"]["name"] == email
    assert public_key["timeout"] == 300_000 and public_key["authenticatorSelection"]["userVerification"] == "required"
    ttl = redis.Redis.from_url(auth_suite.env["REDIS_URL"]).ttl(f"goblin:auth:challenge:{options['challenge_id']}")
    assert 290 <= ttl <= 300, "challenges live 5 minutes in Redis"
    passkey = enrol(client, pair["access_token"], authenticator)
    assert passkey["name"] == "laptop" and passkey["sign_count"] == 0

    # With the email (which binds the challenge to the account) or without: a discoverable credential.
    for email_given in (email, ""):
        options = login_options(client, email_given)
        reply = sign_in(client, options, authenticator.get(options["options"]))
        assert reply.status_code == 200, reply.text
        tokens = reply.json()
        assert tokens["user"]["email"] == email and tokens["refresh_token"].startswith("grt_")
        who = client.get("/auth/me", headers=bearer(tokens["access_token"])).json()
        assert who["user_id"] == pair["user"]["id"] and who["session_id"]
    refreshed = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, "a passkey session is a session like any other"

    listed = client.get("/auth/passkeys", headers=bearer(pair["access_token"])).json()["data"]
    assert [(p["id"], p["sign_count"]) for p in listed] == [(passkey["id"], 2)] and listed[0]["last_used"]
    methods = query(
        auth_suite,
        "SELECT details->>'method' AS method FROM audit.audit_events WHERE event_type = 'login_succeeded' "
        "AND details->>'method' = 'passkey'",
    )
    assert len(methods) >= 2
    assert query(auth_suite, "SELECT 1 FROM audit.audit_events WHERE event_type = 'passkey_registered'")


def test_a_challenge_cannot_be_replayed(client: httpx.Client, origin: str) -> None:
    _, pair = create_user(client)
    authenticator = SoftAuthenticator(origin)
    token = pair["access_token"]
    options = client.post("/auth/passkeys/register/options", headers=bearer(token)).json()
    credential = authenticator.create(options["options"])
    body = {"challenge_id": options["challenge_id"], "credential": credential}
    assert client.post("/auth/passkeys/register/verify", json=body, headers=bearer(token)).status_code == 201
    replayed = client.post("/auth/passkeys/register/verify", json=body, headers=bearer(token))
    assert replayed.status_code == 400 and replayed.json()["error"] == "challenge_invalid"

    options = login_options(client)
    assertion = authenticator.get(options["options"])
    assert sign_in(client, options, assertion).status_code == 200
    again = sign_in(client, options, assertion)
    assert again.status_code == 401 and again.json()["error"] == "challenge_invalid"
    # The same signed assertion under a fresh challenge fails too: the challenge is inside the signature.
    fresh = login_options(client)
    stale = sign_in(client, fresh, assertion)
    assert stale.status_code == 401 and stale.json()["error"] == "passkey_invalid"


def test_a_wrong_origin_is_refused(client: httpx.Client, origin: str) -> None:
    _, pair = create_user(client)
    token = pair["access_token"]
    phishing = SoftAuthenticator("https://goblin-login.evil.example")
    options = client.post("/auth/passkeys/register/options", headers=bearer(token)).json()
    refused = client.post(
        "/auth/passkeys/register/verify",
        json={"challenge_id": options["challenge_id"], "credential": phishing.create(options["options"])},
        headers=bearer(token),
    )
    assert refused.status_code == 400 and "origin" in refused.json()["message"]

    honest = SoftAuthenticator(origin)
    enrol(client, token, honest)
    options = login_options(client)
    phished = sign_in(client, options, honest.get(options["options"], origin="https://goblin-login.evil.example"))
    assert phished.status_code == 401 and phished.json()["error"] == "passkey_invalid"
    assert "origin" in phished.json()["message"]


def test_a_cloned_credential_is_refused(client: httpx.Client, auth_suite: Suite, origin: str) -> None:
    _, pair = create_user(client)
    original = SoftAuthenticator(origin)
    passkey = enrol(client, pair["access_token"], original)
    clone = original.clone()  # copied while its counter was 0
    for _ in range(2):
        options = login_options(client)
        assert sign_in(client, options, original.get(options["options"])).status_code == 200
    options = login_options(client)
    cloned = sign_in(client, options, clone.get(options["options"]))  # counter 1, the server has seen 2
    assert cloned.status_code == 401 and cloned.json()["error"] == "passkey_cloned"
    events = query(
        auth_suite,
        "SELECT details FROM audit.audit_events "
        "WHERE event_type = 'passkey_clone_suspected' AND details->>'passkey_id' = $1",
        passkey["id"],
    )
    assert [json.loads(e["details"])["presented"] for e in events] == [1]
    options = login_options(client)
    assert sign_in(client, options, original.get(options["options"])).status_code == 200, "the real one still works"


def test_several_passkeys_per_user_listed_and_removed(client: httpx.Client, origin: str) -> None:
    email, pair = create_user(client)
    token = pair["access_token"]
    phone, laptop = SoftAuthenticator(origin), SoftAuthenticator(origin)
    phone_key = enrol(client, token, phone, "phone")
    enrol(client, token, laptop, "laptop")
    listed = client.get("/auth/passkeys", headers=bearer(token)).json()["data"]
    assert [p["name"] for p in listed] == ["phone", "laptop"]
    options = client.post("/auth/passkeys/register/options", headers=bearer(token)).json()["options"]
    assert len(options["excludeCredentials"]) == 2
    assert login_options(client, email)["options"]["allowCredentials"] == [], "never named: they would reveal"

    removed = client.delete(f"/auth/passkeys/{phone_key['id']}", headers=bearer(token))
    assert removed.status_code == 200 and removed.json() == {"id": phone_key["id"], "deleted": True}
    assert client.delete(f"/auth/passkeys/{phone_key['id']}", headers=bearer(token)).status_code == 404
    options = login_options(client)
    gone = sign_in(client, options, phone.get(options["options"]))
    assert gone.status_code == 401 and gone.json()["message"] == "unknown passkey"
    options = login_options(client)
    assert sign_in(client, options, laptop.get(options["options"])).status_code == 200


def test_passkey_routes_need_the_right_caller(client: httpx.Client) -> None:
    assert client.post("/auth/passkeys/register/options").status_code == 401
    assert client.get("/auth/passkeys").status_code == 401
    garbage = client.post(
        "/auth/passkeys/login/verify",
        json={"challenge_id": login_options(client)["challenge_id"], "credential": {}},
    )
    assert garbage.status_code == 400 and garbage.json()["error"] == "passkey_invalid"
    missing = client.post("/auth/passkeys/login/verify", json={"challenge_id": "nope", "credential": {"id": "x"}})
    assert missing.status_code == 401 and missing.json()["error"] == "challenge_invalid"
