"""The areas together behind AuthService: hostile input stops before any store, whichever area takes it."""

from __future__ import annotations

import pytest

from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import InvalidArgument, NotFound, Unauthenticated
from tests.unit.auth.fakes import PASSWORD, admin_context


async def test_hostile_input_is_a_client_error_never_a_database_error(service: AuthService) -> None:
    """The fakes would accept NUL; Postgres would not: each of these must stop before the store."""
    admin = await admin_context(service)
    with pytest.raises(Unauthenticated):
        await service.sessions.login(Context(), email="root@example.com\x00", password=PASSWORD)
    with pytest.raises(InvalidArgument):
        await service.users.register(admin, email="a\x00@example.com", password=PASSWORD, tenant_id="", role="")
    with pytest.raises(NotFound):
        await service.users.register(admin, email="a@example.com", password=PASSWORD, tenant_id="x\x00", role="")
    with pytest.raises(NotFound):
        await service.api_keys.revoke(admin, "key\x00")
    with pytest.raises(NotFound):
        await service.passkeys.delete(admin, "../etc")
    with pytest.raises(InvalidArgument):
        await service.api_keys.create(admin, name="k\x00", scopes=["chat"], expires_at=0, user_id="", tokens_per_day=0)
    with pytest.raises(InvalidArgument):
        await service.api_keys.create(admin, name="k", scopes=["chat"], expires_at=2**62, user_id="", tokens_per_day=0)
    with pytest.raises(InvalidArgument):
        await service.tenants.create(
            admin, tenant_id="", name="Big", requests_per_day=2**40, tokens_per_day=0, daily_budget_usd=0
        )
    with pytest.raises(InvalidArgument):
        await service.tenants.update(admin, "default", {"daily_budget_usd": float("nan")})
    with pytest.raises(Unauthenticated):
        await service.api_keys.list_own(Context(user_id="x\x00", scopes=("*",)))
