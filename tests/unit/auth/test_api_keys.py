"""API keys: creating them (never beyond the creator's scopes), listing and revoking them."""

from __future__ import annotations

import pytest

from services.auth.accounts import API_KEY_PREFIX, hash_api_key, new_api_key
from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from tests.unit.auth.fakes import FakeStore, signed_in


def test_new_keys_are_unique_prefixed_and_stored_only_as_hash() -> None:
    a, b = new_api_key(), new_api_key()
    assert a.secret != b.secret and a.id != b.id
    assert a.secret.startswith(a.prefix + "_") and a.prefix.startswith(API_KEY_PREFIX)
    assert a.hash == hash_api_key(a.secret) and a.secret not in a.hash
    assert len(a.secret) > 40


async def test_a_key_cannot_grant_scopes_its_creator_lacks(service: AuthService) -> None:
    ctx = await signed_in(service, "dave@example.com", correlation_id="c-1")
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
    ctx = await signed_in(service, "erin@example.com", correlation_id="c-1")
    request = {"name": "k", "scopes": ["chat"], "expires_at": 0, "user_id": "", "tokens_per_day": 0, **fields}
    with pytest.raises(InvalidArgument, match=message):
        await service.api_keys.create(ctx, **request)


async def test_only_admins_create_keys_for_others_and_revoke_them(service: AuthService, store: FakeStore) -> None:
    admin = await signed_in(service, "root@example.com", role="admin", correlation_id="c-1")
    alice = await signed_in(service, "alice@example.com", correlation_id="c-1")
    bob = await signed_in(service, "bob@example.com", correlation_id="c-1")
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
