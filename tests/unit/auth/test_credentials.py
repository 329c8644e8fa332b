"""Credential verification: API keys and access tokens in, principals out; everything else refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.accounts import hash_api_key
from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import Unauthenticated
from tests.unit.auth.fakes import PASSWORD, FakeEphemeral, FakeStore, signed_in


async def test_created_key_authenticates_and_touches_last_used_once_a_minute(
    service: AuthService, store: FakeStore
) -> None:
    ctx = await signed_in(service, "alice@example.com", correlation_id="c-1")
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
    ctx = await signed_in(service, "bob@example.com", correlation_id="c-1")
    created = await service.api_keys.create(ctx, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)
    store.keys[created.key.id] = replace(store.keys[created.key.id], **change)
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(created.secret)


async def test_keys_of_a_disabled_user_are_refused(service: AuthService, store: FakeStore) -> None:
    ctx = await signed_in(service, "carol@example.com", correlation_id="c-1")
    created = await service.api_keys.create(ctx, name="k", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)
    store.users[ctx.user_id] = replace(store.users[ctx.user_id], is_active=False)
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(created.secret)


@pytest.mark.parametrize("credential", ["", "   ", "gk_unknown", "not-a-goblin-key", "Bearer x", "a.b.c"])
async def test_unknown_credentials_are_refused(service: AuthService, credential: str) -> None:
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(credential)


async def test_access_tokens_of_a_disabled_user_are_refused_at_once(service: AuthService, store: FakeStore) -> None:
    await signed_in(service, "dora@example.com", password=PASSWORD)
    pair = await service.sessions.login(Context(), email="dora@example.com", password=PASSWORD)
    assert (await service.credentials.authenticate(pair.access_token)).user_id == pair.user.id
    store.users[pair.user.id] = replace(store.users[pair.user.id], is_active=False)
    with pytest.raises(Unauthenticated) as refused:
        await service.credentials.authenticate(pair.access_token)
    assert refused.value.code == "session_revoked"


async def test_a_revocation_outlives_the_loss_of_redis(
    service: AuthService, store: FakeStore, ephemeral: FakeEphemeral
) -> None:
    await signed_in(service, "erin@example.com", password=PASSWORD)
    pair = await service.sessions.login(Context(), email="erin@example.com", password=PASSWORD)
    assert await service.sessions.logout(Context(), refresh_token=pair.refresh_token, session_id="")
    ephemeral.revoked.clear()  # Redis lost its data; Postgres still has the revocation
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(pair.access_token)
    assert ephemeral.revoked, "the miss refilled the cache"
