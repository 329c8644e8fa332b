"""Users: who may register whom, what a registration must look like, and the first admin."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.auth.accounts import API_KEY_PREFIX, hash_api_key
from services.auth.context import Context
from services.auth.service import AuthService
from services.common.errors import AlreadyExists, InvalidArgument, PermissionDenied
from tests.unit.auth.fakes import PASSWORD, FakeStore, admin_context, make_service


async def test_registration_is_for_admins_unless_self_registration_is_on(store: FakeStore) -> None:
    closed = make_service(store)
    with pytest.raises(PermissionDenied) as refused:
        await closed.users.register(Context(), email="a@example.com", password=PASSWORD, tenant_id="", role="")
    assert refused.value.code == "registration_closed"
    admin = await admin_context(closed)
    user = await closed.users.register(admin, email="a@example.com", password=PASSWORD, tenant_id="", role="user")
    user_ctx = Context(user_id=user.id, tenant_id="default", scopes=("*",))
    with pytest.raises(PermissionDenied):
        await closed.users.register(user_ctx, email="b@example.com", password=PASSWORD, tenant_id="", role="")
    with pytest.raises(AlreadyExists):
        await closed.users.register(admin, email="A@example.com", password=PASSWORD, tenant_id="", role="")
    open_ = make_service(store, self_registration=True)
    made = await open_.users.register(Context(), email="c@example.com", password=PASSWORD, tenant_id="", role="")
    assert made.role == "user" and made.tenant_id == "default"
    with pytest.raises(PermissionDenied):
        await open_.users.register(Context(), email="d@example.com", password=PASSWORD, tenant_id="", role="admin")


@pytest.mark.parametrize("scopes", [("admin",), ("keys", "admin"), ("*",)])
async def test_an_admins_api_key_creates_no_account(service: AuthService, scopes: tuple[str, ...]) -> None:
    admin = await admin_context(service)
    as_key = Context(user_id=admin.user_id, tenant_id=admin.tenant_id, api_key_id="k1", scopes=scopes)
    with pytest.raises(PermissionDenied):
        await service.users.register(as_key, email="k@example.com", password=PASSWORD, tenant_id="", role="admin")


@pytest.mark.parametrize(
    ("email", "password"),
    [("not-an-email", PASSWORD), ("a@example.com", "short"), ("a@example.com", " " * 12)],
)
async def test_registration_validates_email_and_password(service: AuthService, email: str, password: str) -> None:
    admin = await admin_context(service)
    with pytest.raises(InvalidArgument):
        await service.users.register(admin, email=email, password=password, tenant_id="", role="")


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
