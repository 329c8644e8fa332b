"""Users as requests see them: registration (by an admin, or by anyone when self-registration is on),
looking an account up, and the first admin created at start-up."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Protocol

from services.auth.accounts import ROLES, TENANT_ID_PATTERN, new_api_key, normalise_email, valid_id, write_secret_file
from services.auth.context import Context
from services.auth.permissions import Permissions, is_admin, require_admin, require_full_session
from services.auth.policy import AuthPolicy
from services.auth.repository import UserRecord
from services.auth.repository.base import AuditEvent
from services.common.context import hash_user_id
from services.common.errors import InvalidArgument, NotFound, PermissionDenied

log = logging.getLogger(__name__)


class UserStore(Protocol):
    async def get_user(self, user_id: str) -> UserRecord | None: ...
    async def update_user(
        self, user_id: str, *, active: bool | None, role: str | None, audit: AuditEvent | None = None
    ) -> UserRecord | None: ...
    async def bootstrap_admin(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        key_id: str,
        key_prefix: str,
        key_hash: str,
    ) -> bool: ...


class UserCreator(Protocol):
    async def create_user(
        self,
        *,
        email: str,
        password: str | None,
        role: str,
        tenant_id: str,
        by: str,
        correlation_id: str = "",
    ) -> UserRecord: ...


class PasswordHashing(Protocol):
    async def hash(self, password: str) -> str: ...


class Users:
    def __init__(
        self,
        store: UserStore,
        *,
        accounts: UserCreator,
        passwords: PasswordHashing,
        permissions: Permissions,
        policy: AuthPolicy,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.passwords = passwords
        self.permissions = permissions
        self.policy = policy

    async def register(self, ctx: Context, *, email: str, password: str, tenant_id: str, role: str) -> UserRecord:
        """A new account with a password: by an admin (any tenant and role), or by anyone when
        self-registration is on (a user in the configured tenant)."""
        role = role or "user"
        if ctx.user_id:
            caller = await self.permissions.caller(ctx)
            require_admin(caller, ctx, "only an admin creates accounts for others")
            # An account signs in to a full session: made by a key, it would widen the key.
            require_full_session(ctx, "creating an account")
            if tenant_id and not TENANT_ID_PATTERN.match(tenant_id):
                raise NotFound(f"no tenant {tenant_id[:70]!r}", code="tenant_not_found")
            tenant, by = tenant_id or caller.tenant_id, hash_user_id(caller.id)
        else:
            if not self.policy.self_registration:
                raise PermissionDenied("registration is closed: an admin creates accounts", code="registration_closed")
            if role != "user" or tenant_id not in ("", self.policy.self_registration_tenant):
                raise PermissionDenied("self-registration makes user accounts in the default tenant only")
            tenant, by = self.policy.self_registration_tenant, "self"
        return await self.accounts.create_user(
            email=email,
            password=password,
            role=role,
            tenant_id=tenant,
            by=by,
            correlation_id=ctx.correlation_id,
        )

    async def get(self, ctx: Context, user_id: str) -> UserRecord:
        """The caller's own account (``user_id`` empty or theirs), or, for an admin, anyone's."""
        caller = await self.permissions.caller(ctx)
        if user_id in ("", caller.id):
            return caller
        if not is_admin(caller, ctx) or not valid_id(user_id):
            raise NotFound("no such user")
        user = await self.store.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def update(self, ctx: Context, user_id: str, *, active: bool | None, role: str | None) -> UserRecord:
        """An admin switches an account off or on or changes its role (admin only). Switching off ends
        the account's sessions in the same transaction; its API keys stop because every verification
        reads whether the account is active. Promoting to admin gives a full session's power, so only
        a full session may do it (scopes only narrow). Nobody changes their own account this way: an
        admin who switched themselves off or demoted themselves could leave no admin at all."""
        admin = await self.permissions.admin(ctx)
        if active is None and role is None:
            raise InvalidArgument("name a change: active and/or role")
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role: one of {', '.join(ROLES)}")
        if role == "admin":
            require_full_session(ctx, "making an admin")
        if not valid_id(user_id):
            raise NotFound("no such user")
        if user_id == admin.id:
            raise PermissionDenied("an admin cannot switch off or change their own account; ask another admin")
        changes = {k: v for k, v in (("active", active), ("role", role)) if v is not None}
        user = await self.store.update_user(
            user_id,
            active=active,
            role=role,
            audit=ctx.audit_event("user_updated", user_id=user_id, by=hash_user_id(admin.id), **changes),
        )
        if user is None:
            raise NotFound("no such user")
        log.info("account %s updated by %s: %s", hash_user_id(user_id), hash_user_id(admin.id), changes)
        return user

    async def bootstrap_admin(self, email: str, password: str | None, key_file: Path) -> bool:
        """First start: create the admin and write its API key to ``key_file`` (mode 0600)."""
        key = new_api_key()
        created = await self.store.bootstrap_admin(
            user_id=str(uuid.uuid4()),
            email=normalise_email(email),
            password_hash=await self.passwords.hash(password) if password else None,
            key_id=key.id,
            key_prefix=key.prefix,
            key_hash=key.hash,
        )
        if created:
            write_secret_file(key_file, key.secret + "\n")
            log.info("bootstrap admin created", extra={"admin_key_file": str(key_file), "api_key_id": key.id})
        return created
