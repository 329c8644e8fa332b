"""The audit trail read back for admins (the admin KPI page's event list)."""

from __future__ import annotations

import pytest

from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tests.unit.auth.fakes import FakeStore, admin_context


async def test_admins_read_the_newest_events_first(service: AuthService, store: FakeStore) -> None:
    admin = await admin_context(service)
    for n in range(3):
        await store.audit(admin.audit_event(f"event_{n}"))
    rows = await service.audit_trail.recent(admin, 2)
    assert [r.event_type for r in rows] == ["event_2", "event_1"]
    assert len(await service.audit_trail.recent(admin, 0)) >= 3  # 0: the default page


@pytest.mark.parametrize("limit", [-1, 201])
async def test_a_limit_out_of_range_is_refused(service: AuthService, limit: int) -> None:
    with pytest.raises(InvalidArgument):
        await service.audit_trail.recent(await admin_context(service), limit)


async def test_only_admins_with_the_admin_scope_read_it(service: AuthService) -> None:
    admin = await admin_context(service)
    for ctx in (
        Context(user_id=admin.user_id, tenant_id="default", scopes=("chat",)),
        Context(user_id="nobody", tenant_id="default", scopes=("*",)),
        Context(),
    ):
        with pytest.raises((PermissionDenied, Unauthenticated)):
            await service.audit_trail.recent(ctx, 10)
