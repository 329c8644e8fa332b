"""The one permission helper every area uses: the scope rule, the admin rule, and the caller checks that
reread the account instead of trusting the credential."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.auth.context import Context
from services.auth.permissions import Permissions, has_scope, is_admin, require_grantable
from services.auth.service import AuthService
from services.common.context import hash_user_id
from services.common.errors import PermissionDenied, Unauthenticated
from tests.unit.auth.fakes import FakeStore, signed_in


def test_the_star_scope_grants_every_scope() -> None:
    assert has_scope(("*",), "admin") and has_scope(["chat", "keys"], "keys")
    assert not has_scope(("chat",), "keys") and not has_scope((), "chat")


async def test_admin_needs_the_role_from_the_database_and_the_admin_scope(
    service: AuthService, store: FakeStore
) -> None:
    ctx = await signed_in(service, "root@example.com", role="admin")
    user = store.users[ctx.user_id]
    assert is_admin(user, ctx)
    assert not is_admin(user, replace(ctx, scopes=("chat", "keys"))), "an admin's narrow key is no admin key"
    permissions = Permissions(store)
    assert (await permissions.admin(ctx)).id == ctx.user_id
    store.users[ctx.user_id] = replace(user, role="user")  # demoted after the token was issued
    with pytest.raises(PermissionDenied, match="admin only"):
        await permissions.admin(ctx)


@pytest.mark.parametrize(
    ("user_id", "message"),
    [("", "sign in first"), ("../etc/passwd", "disabled or gone"), ("0f" * 16, "disabled or gone")],
)
async def test_a_caller_must_be_a_known_account(store: FakeStore, user_id: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        await Permissions(store).caller(Context(user_id=user_id, scopes=("*",)))


async def test_a_disabled_caller_is_refused_whatever_the_credential_says(
    service: AuthService, store: FakeStore
) -> None:
    ctx = await signed_in(service, "alice@example.com")
    store.users[ctx.user_id] = replace(store.users[ctx.user_id], is_active=False)
    with pytest.raises(Unauthenticated, match="disabled or gone"):
        await Permissions(store).caller_with_scope(ctx, "keys")


async def test_a_missing_scope_is_insufficient_scope(service: AuthService, store: FakeStore) -> None:
    ctx = await signed_in(service, "alice@example.com")
    permissions = Permissions(store)
    assert (await permissions.caller_with_scope(replace(ctx, scopes=("keys",)), "keys")).id == ctx.user_id
    with pytest.raises(PermissionDenied) as refused:
        await permissions.caller_with_scope(replace(ctx, scopes=("chat",)), "keys")
    assert refused.value.code == "insufficient_scope"


def test_a_credential_grants_only_scopes_it_holds() -> None:
    require_grantable(Context(scopes=("*",)), ["admin", "chat"])
    require_grantable(Context(scopes=("chat", "keys")), ["chat"])
    with pytest.raises(PermissionDenied, match="admin, rag"):
        require_grantable(Context(scopes=("chat", "keys")), ["chat", "admin", "rag"])


def test_audit_events_carry_the_request_but_never_the_user_id() -> None:
    ctx = Context(correlation_id="c-9", user_id="u-1", tenant_id="acme")
    event = ctx.audit_event("logout", user_id="u-1", session_id="s-1")
    assert (event.event_type, event.tenant_id, event.correlation_id) == ("logout", "acme", "c-9")
    assert event.user_hash == hash_user_id("u-1") and "u-1" not in str(event)
    assert event.details == {"session_id": "s-1"}
    assert ctx.audit_event("tenant_updated", tenant_id="other").tenant_id == "other"
