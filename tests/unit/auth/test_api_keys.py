from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from services.auth.repository import ApiKeyRecord
from services.auth.service import API_KEY_PREFIX, AuthService, hash_api_key, new_api_key
from services.common.errors import Unauthenticated


class FakeStore:
    """In-memory stand-in for AuthRepository (the real one is exercised by the integration tests)."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}
        self.touched: list[str] = []
        self.admin_created = False
        self.bootstrap_calls: list[dict] = []

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return self.keys.get(key_hash)

    async def touch_api_key(self, key_id: str) -> None:
        self.touched.append(key_id)

    async def bootstrap_admin(self, **kwargs: object) -> bool:
        self.bootstrap_calls.append(kwargs)
        if self.admin_created:
            return False
        self.admin_created = True
        return True


def record(**overrides: object) -> ApiKeyRecord:
    base = ApiKeyRecord(
        id="k1",
        user_id="u1",
        tenant_id="default",
        email="admin@goblin.local",
        role="admin",
        scopes=["*"],
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
        user_active=True,
    )
    return replace(base, **overrides)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def service(store: FakeStore) -> AuthService:
    return AuthService(store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def test_new_keys_are_unique_prefixed_and_stored_only_as_hash() -> None:
    a, b = new_api_key(), new_api_key()
    assert a.secret != b.secret and a.id != b.id
    assert a.secret.startswith(a.prefix + "_") and a.prefix.startswith(API_KEY_PREFIX)
    assert a.hash == hash_api_key(a.secret) and a.secret not in a.hash
    assert len(a.secret) > 40


async def test_valid_key_yields_principal(service: AuthService, store: FakeStore) -> None:
    key = new_api_key()
    store.keys[key.hash] = record(id=key.id)
    principal = await service.authenticate(key.secret)
    assert principal.user_id == "u1" and principal.role == "admin" and principal.api_key_id == key.id
    assert store.touched == [key.id]
    await service.authenticate(key.secret)
    assert store.touched == [key.id], "last_used_at is written at most once a minute"


@pytest.mark.parametrize(
    "overrides",
    [
        {"revoked_at": datetime.now(UTC)},
        {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
        {"user_active": False},
    ],
)
async def test_revoked_expired_or_inactive_keys_are_refused(
    service: AuthService, store: FakeStore, overrides: dict
) -> None:
    key = new_api_key()
    store.keys[key.hash] = record(id=key.id, **overrides)
    with pytest.raises(Unauthenticated):
        await service.authenticate(key.secret)


@pytest.mark.parametrize("credential", ["", "   ", "gk_unknown", "not-a-goblin-key", "Bearer x"])
async def test_unknown_credentials_are_refused(service: AuthService, credential: str) -> None:
    with pytest.raises(Unauthenticated):
        await service.authenticate(credential)


async def test_bootstrap_writes_the_key_once_owner_only(
    service: AuthService, store: FakeStore, tmp_path: Path
) -> None:
    key_file = tmp_path / "home" / "admin.key"
    assert await service.bootstrap_admin("Admin@Goblin.Local ", "pw", key_file)
    secret = key_file.read_text().strip()
    assert secret.startswith(API_KEY_PREFIX)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    call = store.bootstrap_calls[0]
    assert call["email"] == "admin@goblin.local"
    assert call["key_hash"] == hash_api_key(secret)
    assert call["password_hash"].startswith("$argon2id$")
    assert not await service.bootstrap_admin("admin@goblin.local", "pw", key_file)
    assert key_file.read_text().strip() == secret, "a second start must not replace the key"
