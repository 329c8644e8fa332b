from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.auth.accounts import API_KEY_PREFIX, hash_api_key, new_api_key
from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tests.unit.auth.fakes import FakeStore, make_service


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def service(store: FakeStore) -> AuthService:
    return make_service(store)


async def make_user(service: AuthService, email: str, role: str = "user", tenant: str = "default") -> Context:
    user = await service.accounts.create_user(email=email, password=None, role=role, tenant_id=tenant, by="test")
    return Context(user_id=user.id, tenant_id=user.tenant_id, scopes=("*",), correlation_id="c-1")


def test_new_keys_are_unique_prefixed_and_stored_only_as_hash() -> None:
    a, b = new_api_key(), new_api_key()
    assert a.secret != b.secret and a.id != b.id
    assert a.secret.startswith(a.prefix + "_") and a.prefix.startswith(API_KEY_PREFIX)
    assert a.hash == hash_api_key(a.secret) and a.secret not in a.hash
    assert len(a.secret) > 40


async def test_created_key_authenticates_and_touches_last_used_once_a_minute(
    service: AuthService, store: FakeStore
) -> None:
    ctx = await make_user(service, "alice@example.com")
    created = await service.api_keys.create(
        ctx, name="laptop", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0
    )
    assert created.secret not in str(store.keys) and hash_api_key(created.secret) in store.key_hashes
    principal = await service.credentials.authenticate(created.secret)
    assert principal.user_id == ctx.user_id and principal.api_key_id == created.key.id
    assert principal.scopes == ["chat"] and principal.expires_at == 0
    await service.credentials.authenticate(created.secret)
    assert store.touched == [created.key.id], "last_used_at is written at most once a minute"
    event = store.events("api_key_created")[0]
    assert event.details["api_key_id"] == created.key.id and created.secret not in str(event)


@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": datetime.now(UTC)},
        {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
    ],
)
async def test_revoked_or_expired_keys_are_refused(service: AuthService, store: FakeStore, change: dict) -> None:
    ctx = await make_user(service, "bob@example.com")
    created = await service.api_keys.create(ctx, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)
    store.keys[created.key.id] = replace(store.keys[created.key.id], **change)
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(created.secret)


async def test_keys_of_a_disabled_user_are_refused(service: AuthService, store: FakeStore) -> None:
    ctx = await make_user(service, "carol@example.com")
    created = await service.api_keys.create(ctx, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)
    store.users[ctx.user_id] = replace(store.users[ctx.user_id], is_active=False)
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(created.secret)


@pytest.mark.parametrize("credential", ["", "   ", "gk_unknown", "not-a-goblin-key", "Bearer x", "a.b.c"])
async def test_unknown_credentials_are_refused(service: AuthService, credential: str) -> None:
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(credential)


async def test_a_key_cannot_grant_scopes_its_creator_lacks(service: AuthService) -> None:
    ctx = await make_user(service, "dave@example.com")
    narrow = Context(user_id=ctx.user_id, tenant_id=ctx.tenant_id, scopes=("keys", "chat"))
    created = await service.api_keys.create(
        narrow, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0
    )
    assert created.key.scopes == ["chat"]
    with pytest.raises(PermissionDenied, match="admin"):
        await service.api_keys.create(narrow, name="k", scopes=["admin"], expires_at=0, user_id="", tokens_per_day=0)
    chat_only = Context(user_id=ctx.user_id, tenant_id=ctx.tenant_id, scopes=("chat",))
    with pytest.raises(PermissionDenied, match="keys"):
        await service.api_keys.create(chat_only, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "name"),
        ({"scopes": ["Bad Scope"]}, "scope"),
        ({"expires_at": 1}, "future"),
        ({"tokens_per_day": -5}, "tokens_per_day"),
    ],
)
async def test_invalid_key_requests_are_400(service: AuthService, fields: dict, message: str) -> None:
    ctx = await make_user(service, "erin@example.com")
    request = {"name": "k", "scopes": ["chat"], "expires_at": 0, "user_id": "", "tokens_per_day": 0, **fields}
    with pytest.raises(InvalidArgument, match=message):
        await service.api_keys.create(ctx, **request)


async def test_only_admins_create_keys_for_others_and_revoke_them(service: AuthService, store: FakeStore) -> None:
    admin = await make_user(service, "root@example.com", role="admin")
    alice = await make_user(service, "alice@example.com")
    bob = await make_user(service, "bob@example.com")
    with pytest.raises(PermissionDenied):
        await service.api_keys.create(
            alice, name="k", scopes=["chat"], expires_at=0, user_id=bob.user_id, tokens_per_day=0
        )
    created = await service.api_keys.create(
        admin, name="for bob", scopes=["chat"], expires_at=0, user_id=bob.user_id, tokens_per_day=1000
    )
    assert created.key.user_id == bob.user_id and created.key.tokens_per_day == 1000
    with pytest.raises(NotFound):
        await service.api_keys.revoke(alice, created.key.id)
    assert await service.api_keys.revoke(bob, created.key.id)
    assert [e.details["api_key_id"] for e in store.events("api_key_revoked")] == [created.key.id]
    assert [k.id for k in await service.api_keys.list_own(bob)] == [created.key.id]
    assert await service.api_keys.list_own(alice) == []


async def test_bootstrap_writes_the_key_once_owner_only(service: AuthService, store: FakeStore, tmp_path: Path) -> None:
    key_file = tmp_path / "home" / "admin.key"
    assert await service.users.bootstrap_admin("Admin@Goblin.Local ", "pw-long-enough", key_file)
    secret = key_file.read_text().strip()
    assert secret.startswith(API_KEY_PREFIX)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    call = store.bootstrap_calls[0]
    assert call["email"] == "admin@goblin.local"
    assert call["key_hash"] == hash_api_key(secret)
    assert call["password_hash"].startswith("$argon2id$")
    assert not await service.users.bootstrap_admin("admin@goblin.local", "pw-long-enough", key_file)
    assert key_file.read_text().strip() == secret, "a second start must not replace the key"
