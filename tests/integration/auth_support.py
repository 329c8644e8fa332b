"""What the auth integration tests share: one whole suite of their own (real processes, real Postgres and
Redis, over HTTPS), started once for every test_auth*.py module, and small helpers to drive it."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from goblin.v1 import auth_pb2_grpc
from goblin_tools.suite import Suite, start_suite
from services.auth.keyring import KeyCipher

ADMIN_EMAIL = "admin@goblin.local"
ADMIN_PASSWORD = "admin password for the auth tests"
PASSWORD = "a long enough password"
KEK_TEXT = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
# Short enough to watch in a test: the gateway cache, the lockout, the key reread.
CACHE_TTL_S = 2.0
LOCK_AFTER = 3
LOCK_BASE_S = 2.0
LOCK_MAX_S = 4.0

_shared: list[Suite] = []


def shared_auth_suite(home: Path, database_url: str, redis_url: str) -> Suite:
    """The suite every auth test module uses, started by the first one to ask."""
    if not _shared:
        suite = start_suite(
            home,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            GOBLIN_ADMIN_PASSWORD=ADMIN_PASSWORD,
            GOBLIN_AUTH_KEY_ENCRYPTION_KEY=KEK_TEXT,
            GOBLIN_AUTH_CACHE_TTL_S=str(CACHE_TTL_S),
            GOBLIN_LOGIN_MAX_FAILURES=str(LOCK_AFTER),
            GOBLIN_LOGIN_LOCKOUT_BASE_S=str(LOCK_BASE_S),
            GOBLIN_LOGIN_LOCKOUT_MAX_S=str(LOCK_MAX_S),
            GOBLIN_SIGNING_KEY_REFRESH_S="1",
        )
        try:
            suite.wait_ready()
        except Exception:
            suite.stop()
            raise
        _shared.append(suite)
    return _shared[0]


def stop_shared_auth_suite() -> None:
    while _shared:
        _shared.pop().stop()


def auth_suite_fixture() -> Callable[..., Suite]:
    """A session fixture for a test module; every module gets the same running suite."""

    @pytest.fixture(scope="session")
    def auth_suite(
        tmp_path_factory: pytest.TempPathFactory,
        new_database: Callable[[], str],
        redis_url: str,
        request: pytest.FixtureRequest,
    ) -> Suite:
        request.addfinalizer(stop_shared_auth_suite)
        if _shared:
            return _shared[0]
        return shared_auth_suite(tmp_path_factory.mktemp("auth-suite"), new_database(), redis_url)

    return auth_suite


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    reply = client.post("/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return reply.json()


def admin_token(client: httpx.Client) -> str:
    return login(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"]


def create_user(
    client: httpx.Client, *, email: str | None = None, tenant_id: str = "", role: str = "user"
) -> tuple[str, dict[str, Any]]:
    """A new user made by the admin; its email and its first token pair."""
    email = email or unique_email()
    reply = client.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD, "tenant_id": tenant_id, "role": role},
        headers=bearer(admin_token(client)),
    )
    assert reply.status_code == 201, reply.text
    return email, login(client, email)


def query(suite: Suite, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def signing_key(suite: Suite, state: str = "current") -> tuple[str, Any]:
    """The kid and private key of the key in ``state``, opened as the service opens it (the tests
    hold the key-encryption key), to sign tokens that are wrong only in their claims."""
    [row] = query(suite, "SELECT kid, private_key FROM auth.signing_keys WHERE state = $1", state)
    der = KeyCipher(base64.urlsafe_b64decode(KEK_TEXT)).open(row["kid"], row["private_key"])
    return row["kid"], serialization.load_der_private_key(der, password=None)


def auth_stub(suite: Suite) -> tuple[grpc.Channel, auth_pb2_grpc.AuthStub]:
    """A direct gRPC line to the auth service, as another gateway replica has."""
    channel = suite.grpc_channel("auth")
    return channel, auth_pb2_grpc.AuthStub(channel)
