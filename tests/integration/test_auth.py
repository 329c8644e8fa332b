"""Auth end to end: real processes, real Postgres and Redis, every request over HTTPS through the gateway.

Accounts and password sign-in with lockout, sessions with rotating refresh tokens, access tokens and
every forgery the issue names, signing-key rotation (API and `goblin keys rotate`), API keys and the
gateway's cache, scopes and admin routes, tenant quotas, the `goblin users|keys` commands, the audit
trail. Passkeys are in test_auth_passkeys.py (same suite).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import jwt
import pytest

from goblin.v1 import auth_pb2
from goblin_tools.suite import GOBLIN, ROOT, Suite
from tests.integration.auth_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    CACHE_TTL_S,
    KEK_TEXT,
    LOCK_AFTER,
    LOCK_MAX_S,
    PASSWORD,
    admin_token,
    auth_stub,
    auth_suite_fixture,
    bearer,
    create_user,
    login,
    query,
    signing_key,
    unique_email,
)
from tests.integration.principals import as_caller

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


def me(client: httpx.Client, credential: str) -> httpx.Response:
    return client.get("/auth/me", headers=bearer(credential))


def assert_error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == code, body
    assert body["correlation_id"] == reply.headers["X-Correlation-ID"]
    return body


# -- accounts, sign-in, sessions ----------------------------------------------------------------------
def test_register_login_me_refresh_logout(client: httpx.Client) -> None:
    email = unique_email("Alice")
    registered = client.post(
        "/auth/register",
        json={"email": f"  {email.upper()} ", "password": PASSWORD},
        headers=bearer(admin_token(client)),
    )
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert user["email"] == email.lower() and user["role"] == "user" and user["tenant_id"] == "default"

    pair = login(client, email.upper())
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    assert pair["refresh_expires_in"] == 7 * 86400, "user sessions last 7 days"
    assert pair["user"]["id"] == user["id"]
    who = me(client, pair["access_token"]).json()
    assert who["user_id"] == user["id"] and who["scopes"] == ["*"] and who["session_id"]
    assert who["api_key_id"] is None and who["expires_at"] > time.time()

    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != pair["refresh_token"]
    assert me(client, second["access_token"]).json()["session_id"] == who["session_id"]

    out = client.post("/auth/logout", headers=bearer(second["access_token"]))
    assert out.status_code == 200 and out.json() == {"revoked": True}
    assert_error(me(client, second["access_token"]), 401, "session_revoked")
    assert_error(me(client, pair["access_token"]), 401, "session_revoked")
    assert_error(
        client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )


def test_logout_with_the_refresh_token_alone(client: httpx.Client) -> None:
    _, pair = create_user(client)
    assert client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]}).json() == {"revoked": True}
    assert client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]}).json() == {"revoked": False}
    time.sleep(CACHE_TTL_S + 0.2)  # no bearer was shown, so this gateway had nothing to evict
    assert_error(me(client, pair["access_token"]), 401, "session_revoked")


def test_admin_sessions_last_an_hour(client: httpx.Client) -> None:
    assert login(client, ADMIN_EMAIL, ADMIN_PASSWORD)["refresh_expires_in"] == 3600


def test_registration_rules(client: httpx.Client) -> None:
    anonymous = client.post("/auth/register", json={"email": unique_email(), "password": PASSWORD})
    assert_error(anonymous, 403, "registration_closed")
    email, pair = create_user(client)
    by_user = client.post(
        "/auth/register",
        json={"email": unique_email(), "password": PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert_error(by_user, 403, "forbidden")
    admin = bearer(admin_token(client))
    duplicate = client.post("/auth/register", json={"email": email.upper(), "password": PASSWORD}, headers=admin)
    assert_error(duplicate, 409, "email_taken")
    weak = client.post("/auth/register", json={"email": unique_email(), "password": "short"}, headers=admin)
    assert_error(weak, 400, "weak_password")
    bad_email = client.post("/auth/register", json={"email": "not an email", "password": PASSWORD}, headers=admin)
    assert_error(bad_email, 400, "invalid_request")
    no_tenant = client.post(
        "/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "tenant_id": "nope"},
        headers=admin,
    )
    assert_error(no_tenant, 404, "tenant_not_found")


def test_wrong_password_and_unknown_email_look_alike_and_lock_alike(client: httpx.Client) -> None:
    email, _ = create_user(client)
    stranger = unique_email("nobody")
    for target in (email, stranger):
        for _ in range(LOCK_AFTER):
            failed = client.post("/auth/login", json={"email": target, "password": "wrong password!"})
            assert_error(failed, 401, "invalid_credentials")
            assert failed.json()["message"] == "wrong email or password"
        locked = client.post("/auth/login", json={"email": target, "password": PASSWORD})
        body = assert_error(locked, 429, "login_locked")
        assert 1 <= int(locked.headers["Retry-After"]) <= LOCK_MAX_S and body["retry_after"] >= 1
    time.sleep(int(locked.headers["Retry-After"]) + 0.2)
    assert login(client, email)["access_token"], "the lock is over: the right password works again"


def test_login_takes_as_long_for_an_unknown_email(client: httpx.Client) -> None:
    known = [create_user(client)[0] for _ in range(5)]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(5):  # one failure per account: no lockout gets in the way
        for kind, email in (("known", known[i]), ("unknown", unique_email("ghost"))):
            started = time.perf_counter()
            reply = client.post("/auth/login", json={"email": email, "password": "not the password"})
            timings[kind].append(time.perf_counter() - started)
            assert reply.status_code == 401
    known_ms, unknown_ms = (statistics.median(timings[k]) * 1000 for k in ("known", "unknown"))
    # Both run one argon2id verification (~30 ms here); without the dummy hash unknown would be ~3 ms.
    assert unknown_ms > 0.6 * known_ms, (known_ms, unknown_ms)


def test_refresh_reuse_revokes_the_whole_session(client: httpx.Client, auth_suite: Suite) -> None:
    _, first = create_user(client)
    second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    reused = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_error(reused, 401, "refresh_token_reused")
    # The legitimate holder's newer token is revoked with it: the thief cannot keep the session either.
    assert_error(
        client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    time.sleep(CACHE_TTL_S + 0.2)
    assert_error(me(client, second["access_token"]), 401, "session_revoked")
    session_id = jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]
    rows = query(auth_suite, "SELECT revoked_at FROM auth.sessions WHERE refresh_family = $1", session_id)
    assert len(rows) == 2 and all(r["revoked_at"] is not None for r in rows)
    events = query(auth_suite, "SELECT details FROM audit.audit_events WHERE event_type = 'refresh_token_reused'")
    assert any(json.loads(e["details"])["session_id"] == session_id for e in events)


# -- access tokens -------------------------------------------------------------------------------------
def good_claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "goblin",
        "aud": "goblin-api",
        "sub": user_id,
        "tid": "default",
        "email": "forged@example.com",
        "role": "admin",
        "scope": "*",
        "sid": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return claims


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        import base64

        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def forge(kind: str, kid: str, key: Any, user_id: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    header = {"kid": kid, "typ": "at+jwt"}
    now = int(time.time())
    if kind == "alg none":
        return unsigned({**header, "alg": "none"}, good_claims(user_id))
    if kind == "HS256 keyed with the public key":
        import hmac

        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head, body, _ = unsigned({**header, "alg": "HS256"}, good_claims(user_id)).split(".")
        mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return unsigned({**header, "alg": "HS256"}, good_claims(user_id), mac)
    claims = {
        "expired": good_claims(user_id, exp=now - 120, iat=now - 1020, nbf=now - 1020),
        "not yet valid": good_claims(user_id, nbf=now + 600, exp=now + 1200),
        "wrong audience": good_claims(user_id, aud="another-api"),
        "wrong issuer": good_claims(user_id, iss="https://evil.example"),
    }.get(kind)
    if claims is not None:
        return jwt.encode(claims, key, "ES256", headers=header)
    stranger = ec.generate_private_key(ec.SECP256R1())
    if kind == "unknown kid":
        return jwt.encode(good_claims(user_id), stranger, "ES256", headers={"kid": "no-such-key", "typ": "at+jwt"})
    if kind == "known kid, another key":
        return jwt.encode(good_claims(user_id), stranger, "ES256", headers=header)
    raise AssertionError(kind)


ATTACKS = {
    "alg none": "invalid_token",
    "HS256 keyed with the public key": "invalid_token",
    "expired": "token_expired",
    "not yet valid": "invalid_token",
    "wrong audience": "invalid_token",
    "wrong issuer": "invalid_token",
    "unknown kid": "invalid_token",
    "known kid, another key": "invalid_token",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_forged_tokens_are_refused(client: httpx.Client, auth_suite: Suite, attack: str) -> None:
    kid, key = signing_key(auth_suite)
    admin_id = query(auth_suite, "SELECT id FROM auth.users WHERE email = $1", ADMIN_EMAIL)[0]["id"]
    control = jwt.encode(good_claims(admin_id), key, "ES256", headers={"kid": kid, "typ": "at+jwt"})
    assert me(client, control).status_code == 200, "the same construction with nothing wrong passes"
    reply = me(client, forge(attack, kid, key, admin_id))
    assert_error(reply, 401, ATTACKS[attack])
    assert reply.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_jwks_is_public_and_carries_the_standby_key(client: httpx.Client) -> None:
    reply = client.get("/.well-known/jwks.json")
    assert reply.status_code == 200 and "max-age" in reply.headers["Cache-Control"]
    keys = reply.json()["keys"]
    assert len(keys) >= 2
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["use"] == "sig"
        assert "d" not in key, "never the private part"
    pair = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    verified = jwt.decode(
        pair["access_token"],
        jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key,
        algorithms=["ES256"],
        audience="goblin-api",
        issuer="goblin",
    )
    assert verified["role"] == "admin", "a third party can verify our tokens from the JWKS alone"


def jwks_kids(client: httpx.Client) -> list[str]:
    return [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]]


def wait_for(predicate: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def goblin(suite: Suite, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GOBLIN_", "DATABASE_URL", "REDIS_URL"))},
        "DATABASE_URL": suite.database_url,
        "GOBLIN_HOME": str(suite.home),
        "GOBLIN_AUTH_KEY_ENCRYPTION_KEY": KEK_TEXT,
        "COLUMNS": "250",  # rich wraps at the terminal width; keep kids and messages on one line
        **env,
    }
    return subprocess.run(
        [str(GOBLIN), *args],
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_key_rotation_without_downtime(client: httpx.Client, auth_suite: Suite) -> None:
    kids_before = jwks_kids(client)
    first, standby = kids_before[:2]
    old_token = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"]
    assert jwt.get_unverified_header(old_token)["kid"] == first

    forbidden = client.post("/auth/signing-keys/rotate", headers=bearer(create_user(client)[1]["access_token"]))
    assert_error(forbidden, 403, "forbidden")
    rotated = client.post("/auth/signing-keys/rotate", headers=bearer(old_token))
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["current_kid"] == standby, "the key verifiers already had starts signing"
    assert [k["kid"] for k in body["keys"]][:3] == [standby, body["standby_kid"], first]
    assert jwks_kids(client)[:3] == [standby, body["standby_kid"], first]
    new_token = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == standby

    channel, stub = auth_stub(auth_suite)
    with channel:
        # Straight to the auth service, past the gateway's cache: the old key still verifies.
        assert stub.Authenticate(auth_pb2.AuthenticateRequest(credential=old_token)).user_id
        assert me(client, old_token).status_code == 200

        # `goblin keys rotate` against the database; the running service rereads the keys within 1 s.
        result = goblin(auth_suite, "keys", "rotate")
        assert result.returncode == 0, result.stderr
        third = body["standby_kid"]
        assert third in result.stderr and "signing keys rotated" in result.stderr
        signed_by = wait_for(
            lambda: (
                jwt.get_unverified_header(login(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"])["kid"] == third
            )
        )
        assert signed_by, "the service signs with the key the command promoted"
        assert stub.Authenticate(auth_pb2.AuthenticateRequest(credential=old_token)).user_id
        assert stub.Authenticate(auth_pb2.AuthenticateRequest(credential=new_token)).user_id

        # A key whose tokens have all expired is dropped: its tokens, and it, are gone from then on.
        query(
            auth_suite,
            "UPDATE auth.signing_keys SET verify_until = now() - interval '1 second' WHERE kid = $1",
            first,
        )

        def refused() -> bool:
            try:
                stub.Authenticate(auth_pb2.AuthenticateRequest(credential=old_token))
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        assert wait_for(refused)
    assert wait_for(lambda: first not in jwks_kids(client))
    events = query(auth_suite, "SELECT details FROM audit.audit_events WHERE event_type = 'signing_keys_rotated'")
    assert {json.loads(e["details"]).get("by") for e in events} >= {"api", "cli"}

    wrong_kek = goblin(auth_suite, "keys", "rotate", GOBLIN_AUTH_KEY_ENCRYPTION_KEY="A" * 43 + "=")
    assert wrong_kek.returncode == 1 and "sealed with key-encryption key" in wrong_kek.stderr


# -- API keys ------------------------------------------------------------------------------------------
def test_api_key_lifecycle(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    user = bearer(pair["access_token"])
    created = client.post("/auth/api-keys", json={"name": "laptop", "scopes": ["chat"]}, headers=user)
    assert created.status_code == 201, created.text
    key = created.json()
    secret = key["key"]
    assert secret.startswith(key["prefix"] + "_") and key["scopes"] == ["chat"] and key["last_used"] is None
    [row] = query(auth_suite, "SELECT * FROM auth.api_keys WHERE id = $1", key["id"])
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps({k: str(v) for k, v in dict(row).items()}), "stored hashed only"

    who = me(client, secret).json()
    assert who["api_key_id"] == key["id"] and who["scopes"] == ["chat"]
    assert client.get("/v1/models", headers=bearer(secret)).status_code not in (401, 403)
    assert_error(client.get("/auth/api-keys", headers=bearer(secret)), 403, "insufficient_scope")

    listed = client.get("/auth/api-keys", headers=user).json()["data"]
    [entry] = [k for k in listed if k["id"] == key["id"]]
    assert "key" not in entry and entry["prefix"] == key["prefix"] and entry["last_used"] is not None

    revoked = client.delete(f"/auth/api-keys/{key['id']}", headers=user)
    assert revoked.status_code == 200 and revoked.json() == {"id": key["id"], "revoked": True}
    assert_error(me(client, secret), 401, "unauthorized")
    assert [k["revoked"] for k in client.get("/auth/api-keys", headers=user).json()["data"]] == [True]
    other = bearer(create_user(client)[1]["access_token"])
    assert_error(client.delete(f"/auth/api-keys/{key['id']}", headers=other), 404, "not_found")


def test_api_key_expiry(client: httpx.Client) -> None:
    _, pair = create_user(client)
    user = bearer(pair["access_token"])
    past = client.post("/auth/api-keys", json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"}, headers=user)
    assert_error(past, 400, "invalid_request")
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    key = client.post("/auth/api-keys", json={"name": "brief", "expires_at": soon}, headers=user).json()
    assert key["expires_at"] and me(client, key["key"]).status_code == 200
    time.sleep(4)
    assert_error(me(client, key["key"]), 401, "token_expired")


def test_admins_create_keys_for_others_users_do_not(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    user_id = pair["user"]["id"]
    admin_id = query(auth_suite, "SELECT id FROM auth.users WHERE email = $1", ADMIN_EMAIL)[0]["id"]
    by_user = client.post(
        "/auth/api-keys", json={"name": "x", "user_id": admin_id}, headers=bearer(pair["access_token"])
    )
    assert_error(by_user, 403, "forbidden")
    by_admin = client.post(
        "/auth/api-keys",
        json={"name": "provisioned", "user_id": user_id, "scopes": ["chat"], "tokens_per_day": 5000},
        headers=bearer(admin_token(client)),
    )
    assert by_admin.status_code == 201 and by_admin.json()["user_id"] == user_id
    assert by_admin.json()["tokens_per_day"] == 5000
    assert me(client, by_admin.json()["key"]).json()["user_id"] == user_id


def test_a_key_revoked_elsewhere_lives_at_most_the_cache_ttl(client: httpx.Client, auth_suite: Suite) -> None:
    _, pair = create_user(client)
    key = client.post("/auth/api-keys", json={"name": "cached"}, headers=bearer(pair["access_token"])).json()
    assert me(client, key["key"]).status_code == 200
    cached_at = time.monotonic()
    channel, stub = auth_stub(auth_suite)
    with channel:  # revoked through another gateway replica: this one does not hear of it
        caller = as_caller(auth_suite, pair["user"]["id"], scopes=("*",))
        assert stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key["id"]), metadata=caller).revoked
        with pytest.raises(grpc.RpcError):
            stub.Authenticate(auth_pb2.AuthenticateRequest(credential=key["key"]))
    still = me(client, key["key"])
    if time.monotonic() - cached_at < CACHE_TTL_S - 0.3:
        assert still.status_code == 200, "served from the gateway's cache, as documented"
    time.sleep(max(0.0, CACHE_TTL_S - (time.monotonic() - cached_at)) + 0.2)
    assert_error(me(client, key["key"]), 401, "unauthorized")


# -- scopes, roles, quotas -----------------------------------------------------------------------------
def test_scopes_and_admin_routes(client: httpx.Client) -> None:
    assert_error(client.get("/auth/tenants"), 401, "unauthorized")
    _, pair = create_user(client)
    assert_error(client.get("/auth/tenants", headers=bearer(pair["access_token"])), 403, "forbidden")
    admin = bearer(admin_token(client))
    assert client.get("/auth/tenants", headers=admin).status_code == 200
    narrow = client.post("/auth/api-keys", json={"name": "chat only", "scopes": ["chat"]}, headers=admin).json()
    assert_error(client.get("/auth/tenants", headers=bearer(narrow["key"])), 403, "forbidden")
    keys_only = client.post("/auth/api-keys", json={"name": "keys", "scopes": ["keys"]}, headers=admin).json()
    refused = client.get("/v1/models", headers=bearer(keys_only["key"]))
    assert_error(refused, 403, "insufficient_scope")
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    for path in ("/v1/chat/completions", "/v1/embeddings", "/invoke"):
        assert_error(client.post(path, json={}, headers=bearer(keys_only["key"])), 403, "insufficient_scope")
        assert_error(client.post(path, json={}), 401, "unauthorized")


def test_tenant_request_quota(client: httpx.Client, auth_suite: Suite) -> None:
    admin = bearer(admin_token(client))
    name = f"Quota {uuid.uuid4().hex[:8]}"
    tenant = client.post(
        "/auth/tenants", json={"name": name, "requests_per_day": 3, "tokens_per_day": 1000}, headers=admin
    )
    assert tenant.status_code == 201, tenant.text
    tenant_id = tenant.json()["id"]
    assert tenant.json()["requests_per_day"] == 3 and tenant.json()["tokens_per_day"] == 1000
    _, pair = create_user(client, tenant_id=tenant_id)
    key = client.post("/auth/api-keys", json={"name": "q"}, headers=bearer(pair["access_token"])).json()
    chat = {"model": "nope/not-a-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for _ in range(3):
        reply = client.post("/v1/chat/completions", json=chat, headers=bearer(key["key"]))
        assert reply.status_code != 429, reply.text
    refused = client.post("/v1/chat/completions", json=chat, headers=bearer(pair["access_token"]))
    body = assert_error(refused, 429, "quota_exceeded")
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert abs(int(refused.headers["Retry-After"]) - (midnight - datetime.now(UTC)).total_seconds()) < 5
    assert body["retry_after"] == int(refused.headers["Retry-After"])
    assert client.get("/v1/models", headers=bearer(key["key"])).status_code != 429, "listing is not metered"
    assert client.post("/v1/chat/completions", json=chat, headers=admin).status_code != 429, "other tenants"

    raised = client.patch(f"/auth/tenants/{tenant_id}", json={"requests_per_day": 0}, headers=admin)
    assert raised.status_code == 200 and raised.json()["requests_per_day"] is None
    time.sleep(CACHE_TTL_S + 0.2)
    assert client.post("/v1/chat/completions", json=chat, headers=bearer(key["key"])).status_code != 429
    events = query(auth_suite, "SELECT tenant_id FROM audit.audit_events WHERE event_type = 'quota_exhausted'")
    assert [e["tenant_id"] for e in events].count(tenant_id) == 1


# -- the goblin command --------------------------------------------------------------------------------
def test_goblin_users_create_and_keys_create(client: httpx.Client, auth_suite: Suite) -> None:
    email = unique_email("cli")
    made = goblin(auth_suite, "users", "create", email.upper(), "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert login(client, email)["user"]["id"] == made.stdout.strip()
    again = goblin(auth_suite, "users", "create", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 1 and "exists" in again.stderr

    key = goblin(auth_suite, "keys", "create", "--user", email, "--name", "ci", "--scope", "chat", "--scope", "keys")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    assert secret.startswith("gk_") and secret not in key.stderr
    assert me(client, secret).json()["scopes"] == ["chat", "keys"]
    unknown = goblin(auth_suite, "keys", "create", "--user", unique_email())
    assert unknown.returncode == 1 and "no active user" in unknown.stderr


# -- the audit trail -----------------------------------------------------------------------------------
def test_audit_trail_has_the_events_and_never_the_secrets(client: httpx.Client, auth_suite: Suite) -> None:
    email, pair = create_user(client)
    client.post("/auth/login", json={"email": email, "password": "wrong password!"})
    key = client.post("/auth/api-keys", json={"name": "audited"}, headers=bearer(pair["access_token"])).json()
    client.delete(f"/auth/api-keys/{key['id']}", headers=bearer(pair["access_token"]))
    client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    rows = query(
        auth_suite,
        "SELECT event_type, user_hash, details::text AS details FROM audit.audit_events WHERE location = 'auth'",
    )
    types = {r["event_type"] for r in rows}
    assert {
        "admin_bootstrapped",
        "user_created",
        "login_succeeded",
        "login_failed",
        "api_key_created",
        "api_key_revoked",
        "logout",
    } <= types
    secrets_ = [key["key"], pair["refresh_token"], pair["access_token"], PASSWORD, ADMIN_PASSWORD]
    dump = json.dumps([dict(r) for r in rows])
    assert not [s for s in secrets_ if s in dump]
    assert pair["user"]["id"] not in dump, "user ids are hashed in the audit trail"
    time.sleep(0.5)
    log = auth_suite.log_path.read_text(errors="replace")
    assert not [s for s in secrets_ if s in log], "no secret reaches the logs"


HOSTILE = [
    ("POST", "/auth/login", r'{"email": "a\ud800@example.com", "password": "x"}'),
    ("POST", "/auth/login", r'{"email": "root@example.com\u0000", "password": "x"}'),
    ("POST", "/auth/register", r'{"email": "x@example.com", "password": "long enough", "tenant_id": "\u0000"}'),
    ("POST", "/auth/tenants", '{"name": "huge", "requests_per_day": 1099511627776}'),
    ("PATCH", "/auth/tenants/default", '{"daily_budget_usd": 1e300}'),
    ("PATCH", "/auth/tenants/no%00such", '{"name": "x"}'),
    ("DELETE", "/auth/api-keys/%00", ""),
    ("DELETE", "/auth/passkeys/not-an-id", ""),
    ("POST", "/auth/api-keys", '{"name": "k", "expires_at": "0001-01-01T00:00:00+14:00"}'),
    ("POST", "/auth/api-keys", '{"name": "k", "tokens_per_day": 1180591620717411303424}'),
    ("POST", "/auth/api-keys", r'{"name": "k\u0000", "scopes": ["chat"]}'),
    ("POST", "/auth/passkeys/login/options", r'{"email": "\u0000"}'),
    ("POST", "/auth/passkeys/login/verify", '{"challenge_id": "x", "credential": []}'),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE)
def test_hostile_input_gets_a_client_error(client: httpx.Client, method: str, path: str, body: str) -> None:
    reply = client.request(
        method,
        path,
        content=body.encode(),
        headers={**bearer(admin_token(client)), "Content-Type": "application/json"},
    )
    assert 400 <= reply.status_code < 500, reply.text
    assert {"error", "message", "correlation_id"} <= set(reply.json())


def test_auth_metrics_count_sign_ins_and_checks(client: httpx.Client, auth_suite: Suite) -> None:
    email, _ = create_user(client)
    client.post("/auth/login", json={"email": email, "password": "wrong password!"})
    text = httpx.get(auth_suite.metrics_url("auth"), timeout=5).text
    for sample in (
        'goblin_auth_sign_ins_total{method="password",outcome="success"}',
        'goblin_auth_sign_ins_total{method="password",outcome="failure"}',
        'goblin_auth_authentications_total{kind="access_token",outcome="accepted"}',
    ):
        assert sample in text, sample
