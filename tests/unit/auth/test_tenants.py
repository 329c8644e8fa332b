"""Tenants and the request quota: admin management, the per-day count, the tenant cache."""

from __future__ import annotations

import pytest

from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from tests.unit.auth.fakes import PASSWORD, FakeEphemeral, FakeStore, admin_context


async def test_tenants_and_request_quota(service: AuthService, ephemeral: FakeEphemeral, store: FakeStore) -> None:
    admin = await admin_context(service)
    tenant = await service.tenants.create(
        admin, tenant_id="", name="Acme Corp", requests_per_day=2, tokens_per_day=0, daily_budget_usd=0
    )
    assert tenant.id == "acme-corp" and tenant.requests_per_day == 2 and tenant.tokens_per_day is None
    user = await service.users.register(admin, email="u@acme.example", password=PASSWORD, tenant_id=tenant.id, role="")
    ctx = Context(user_id=user.id, tenant_id=tenant.id, scopes=("*",))
    pair = await service.sessions.login(Context(), email="u@acme.example", password=PASSWORD)
    assert (await service.credentials.authenticate(pair.access_token)).requests_per_day == 2
    assert (await service.tenants.charge_request(ctx)).used == 1
    assert (await service.tenants.charge_request(ctx)).used == 2
    with pytest.raises(ResourceExhausted) as spent:
        await service.tenants.charge_request(ctx)
    assert spent.value.code == "quota_exceeded" and 0 < (spent.value.retry_after or 0) <= 86400
    with pytest.raises(ResourceExhausted):
        await service.tenants.charge_request(ctx)
    assert len(store.events("quota_exhausted")) == 1, "audited once, not per refused request"
    assert (await service.tenants.charge_request(admin)).limit == 0, "the default tenant is unlimited"
    await service.tenants.update(admin, tenant.id, {"requests_per_day": 0})
    assert (await service.tenants.charge_request(ctx)).limit == 0, "an update applies at once on this replica"
    with pytest.raises(PermissionDenied):
        await service.tenants.list_all(ctx)
    with pytest.raises(InvalidArgument):
        await service.tenants.update(admin, tenant.id, {"requests_per_day": -1})


async def test_admin_checks_need_the_admin_scope_not_only_the_role(service: AuthService) -> None:
    admin = await admin_context(service)
    narrowed = Context(user_id=admin.user_id, tenant_id="default", scopes=("chat",))
    with pytest.raises(PermissionDenied):
        await service.tenants.list_all(narrowed)
    assert await service.tenants.list_all(admin)
