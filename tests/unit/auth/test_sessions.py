"""Sessions: password sign-in and its lockout, refresh-token rotation and reuse, sign-out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.context import Context
from services.auth.passwords import LockoutPolicy
from services.auth.service import AuthService
from services.auth.sessions import GLOBAL_LOCKOUT_FACTOR
from services.common.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from tests.unit.auth.fakes import PASSWORD, FakeEphemeral, FakeStore, admin_context


async def test_login_issues_a_session_with_access_and_refresh_tokens(service: AuthService, store: FakeStore) -> None:
    admin = await admin_context(service)
    user = await service.users.register(admin, email="  Alice@Example.COM ", password=PASSWORD, tenant_id="", role="")
    assert user.email == "alice@example.com" and user.role == "user" and user.tenant_id == "default"
    pair = await service.sessions.login(Context(client_ip="203.0.113.9"), email="ALICE@example.com", password=PASSWORD)
    assert pair.expires_in == 900 and pair.refresh_expires_in == 7 * 86400
    principal = await service.credentials.authenticate(pair.access_token)
    assert (principal.user_id, principal.scopes, principal.session_id) == (
        user.id,
        ["*"],
        principal.session_id,
    )
    assert principal.session_id and principal.api_key_id == ""
    [event] = store.events("login_succeeded")
    assert event.details["method"] == "password" and event.user_hash and user.id not in str(event)


async def test_admin_sessions_are_short(service: AuthService) -> None:
    await admin_context(service)
    pair = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    assert pair.refresh_expires_in == 3600


async def test_wrong_password_and_unknown_email_get_the_same_answer(service: AuthService, store: FakeStore) -> None:
    await admin_context(service)
    answers = []
    for email in ("root@example.com", "nobody@example.com"):
        with pytest.raises(Unauthenticated) as caught:
            await service.sessions.login(Context(), email=email, password="wrong password")
        answers.append((caught.value.code, caught.value.message))
    assert answers[0] == answers[1] == ("invalid_credentials", "wrong email or password")
    reasons = [e.details["reason"] for e in store.events("login_failed")]
    assert reasons == ["wrong_password", "unknown_email"]


@pytest.mark.parametrize("email", ["root@example.com", "nobody@example.com"])
async def test_repeated_failures_lock_known_and_unknown_emails_alike(
    service: AuthService, store: FakeStore, email: str
) -> None:
    await admin_context(service)
    for _ in range(3):  # the fakes' policy: locked after 3 failures, for 30 s, doubling, at most 120 s
        with pytest.raises(Unauthenticated):
            await service.sessions.login(Context(), email=email, password="wrong")
    with pytest.raises(ResourceExhausted) as locked:
        await service.sessions.login(Context(), email=email, password=PASSWORD)
    assert locked.value.code == "login_locked" and 29 <= (locked.value.retry_after or 0) <= 30
    assert store.events("login_failed")[-1].details["client_locked_for_s"] == 30


async def test_a_lock_is_bounded_and_does_not_grow_while_locked(
    service: AuthService, store: FakeStore, ephemeral: FakeEphemeral
) -> None:
    admin = await admin_context(service)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await service.sessions.login(Context(), email="root@example.com", password="wrong")
    for _ in range(20):  # hammering a locked account is refused without counting
        with pytest.raises(ResourceExhausted):
            await service.sessions.login(Context(), email="root@example.com", password="wrong")
    assert store.users[admin.user_id].failed_logins == 3
    # The lock ends; each further failure doubles it, never beyond the maximum.
    for _ in range(6):
        ephemeral.failures = {subject: (n, 0.0) for subject, (n, _) in ephemeral.failures.items()}
        with pytest.raises(Unauthenticated):
            await service.sessions.login(Context(), email="root@example.com", password="wrong")
    assert [e.details["client_locked_for_s"] for e in store.events("login_failed")[-4:]] == [120, 120, 120, 120]
    ephemeral.failures = {subject: (n, 0.0) for subject, (n, _) in ephemeral.failures.items()}
    pair = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    assert pair.access_token and store.users[admin.user_id].failed_logins == 0
    assert not ephemeral.failures, "a sign-in forgets its address's failures"


async def test_a_lock_holds_one_address_only_until_the_global_ceiling(service: AuthService, store: FakeStore) -> None:
    await admin_context(service)
    attacker, owner = Context(client_ip="203.0.113.7"), Context(client_ip="198.51.100.9")
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await service.sessions.login(attacker, email="root@example.com", password="wrong")
    with pytest.raises(ResourceExhausted):
        await service.sessions.login(attacker, email="root@example.com", password=PASSWORD)
    assert (await service.sessions.login(owner, email="root@example.com", password=PASSWORD)).access_token
    # Spread over many addresses, GLOBAL_LOCKOUT_FACTOR times the failures lock the email everywhere.
    for i in range(3 * GLOBAL_LOCKOUT_FACTOR):
        with pytest.raises(Unauthenticated):
            await service.sessions.login(
                Context(client_ip=f"192.0.2.{i // 2 + 1}"), email="root@example.com", password="wrong"
            )
    with pytest.raises(ResourceExhausted):
        await service.sessions.login(owner, email="root@example.com", password=PASSWORD)


def test_lockout_policy_is_exponential_and_capped() -> None:
    policy = LockoutPolicy(max_failures=5, base_s=30, max_s=900)
    assert [policy.lock_for(n) for n in range(1, 12)] == [0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900]
    assert policy.lock_for(10_000) == 900


async def test_password_hashes_are_upgraded_on_login(service: AuthService, store: FakeStore) -> None:
    from argon2 import PasswordHasher

    admin = await admin_context(service)
    old_hash = PasswordHasher(time_cost=1, memory_cost=16, parallelism=1).hash(PASSWORD)
    store.users[admin.user_id] = replace(store.users[admin.user_id], password_hash=old_hash)
    await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    assert store.users[admin.user_id].password_hash != old_hash
    assert not service.passwords.needs_rehash(store.users[admin.user_id].password_hash or "")


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(
    service: AuthService, ephemeral: FakeEphemeral, store: FakeStore
) -> None:
    await admin_context(service)
    first = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    second = await service.sessions.refresh(Context(), first.refresh_token)
    assert second.refresh_token != first.refresh_token
    session_id = (await service.credentials.authenticate(second.access_token)).session_id
    assert session_id == (await service.credentials.authenticate(first.access_token)).session_id
    with pytest.raises(Unauthenticated) as reused:
        await service.sessions.refresh(Context(), first.refresh_token)
    assert reused.value.code == "refresh_token_reused"
    with pytest.raises(Unauthenticated):  # the thief's (or the victim's) newer token dies with it
        await service.sessions.refresh(Context(), second.refresh_token)
    with pytest.raises(Unauthenticated) as revoked:
        await service.credentials.authenticate(second.access_token)
    assert revoked.value.code == "session_revoked"
    assert [e.details["session_id"] for e in store.events("refresh_token_reused")] == [session_id]


@pytest.mark.parametrize("token", ["", "grt_unknown", "eyJhbGciOi.x.y", "gk_abc"])
async def test_bad_refresh_tokens_are_refused(service: AuthService, token: str) -> None:
    with pytest.raises(Unauthenticated):
        await service.sessions.refresh(Context(), token)


async def test_expired_session_cannot_refresh(service: AuthService, store: FakeStore) -> None:
    await admin_context(service)
    pair = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    for sid, session in store.sessions.items():
        store.sessions[sid] = replace(session, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="expired"):
        await service.sessions.refresh(Context(), pair.refresh_token)


async def test_logout_by_refresh_token_or_by_access_token(service: AuthService, store: FakeStore) -> None:
    await admin_context(service)
    one = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    assert await service.sessions.logout(Context(), refresh_token=one.refresh_token, session_id="")
    with pytest.raises(Unauthenticated):
        await service.credentials.authenticate(one.access_token)
    with pytest.raises(Unauthenticated):
        await service.sessions.refresh(Context(), one.refresh_token)
    two = await service.sessions.login(Context(), email="root@example.com", password=PASSWORD)
    principal = await service.credentials.authenticate(two.access_token)
    ctx = Context(user_id=principal.user_id, scopes=("*",))
    assert await service.sessions.logout(ctx, refresh_token="", session_id=principal.session_id)
    assert not await service.sessions.logout(ctx, refresh_token="", session_id=principal.session_id), "only once"
    with pytest.raises(Unauthenticated):
        await service.sessions.refresh(Context(), two.refresh_token)
    with pytest.raises(InvalidArgument):
        await service.sessions.logout(Context(), refresh_token="", session_id="")
    assert len(store.events("logout")) == 2
