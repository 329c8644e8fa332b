"""API keys as their owners (and admins) manage them: create, list, revoke.

Verifying a presented key is :mod:`services.auth.credentials`; making and storing a valid one is
:class:`~services.auth.accounts.Accounts`, which the ``goblin keys create`` command shares.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from services.auth.accounts import CreatedApiKey, valid_id, valid_scopes
from services.auth.context import Context
from services.auth.permissions import Permissions, is_admin, require_admin, require_grantable
from services.auth.repository import ApiKeyInfo, AuditEvent, UserRecord
from services.common.context import hash_user_id
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


class ApiKeyStore(Protocol):
    async def get_user(self, user_id: str) -> UserRecord | None: ...
    async def get_api_key(self, key_id: str) -> ApiKeyInfo | None: ...
    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]: ...
    async def revoke_api_key(self, key_id: str, audit: AuditEvent | None = None) -> bool: ...


class ApiKeyIssuer(Protocol):
    async def issue_api_key(
        self,
        *,
        user: UserRecord,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        tokens_per_day: int,
        by: str,
        correlation_id: str = "",
    ) -> CreatedApiKey: ...


class ApiKeys:
    def __init__(self, store: ApiKeyStore, *, accounts: ApiKeyIssuer, permissions: Permissions) -> None:
        self.store = store
        self.accounts = accounts
        self.permissions = permissions

    async def create(
        self,
        ctx: Context,
        *,
        name: str,
        scopes: list[str],
        expires_at: int,
        user_id: str,
        tokens_per_day: int,
    ) -> CreatedApiKey:
        """A new key for the caller, or (admins) for ``user_id``; never with a scope the caller lacks."""
        caller = await self.permissions.caller_with_scope(ctx, "keys")
        owner = caller
        if user_id and user_id != caller.id:
            require_admin(caller, ctx, "only an admin creates keys for other users")
            found = await self.store.get_user(user_id) if valid_id(user_id) else None
            if found is None:
                raise NotFound("no such user")
            if not found.is_active:
                raise FailedPrecondition("that account is disabled")
            owner = found
        granted = valid_scopes(scopes or ["chat"])
        require_grantable(ctx, granted)
        try:
            expiry = datetime.fromtimestamp(expires_at, UTC) if expires_at else None
        except (ValueError, OverflowError, OSError):
            raise InvalidArgument("expires_at: not a time we can represent") from None
        return await self.accounts.issue_api_key(
            user=owner,
            name=name,
            scopes=granted,
            expires_at=expiry,
            tokens_per_day=tokens_per_day,
            by=hash_user_id(caller.id),
            correlation_id=ctx.correlation_id,
        )

    async def list_own(self, ctx: Context) -> list[ApiKeyInfo]:
        """The caller's keys, revoked ones included."""
        caller = await self.permissions.caller_with_scope(ctx, "keys")
        return await self.store.list_api_keys(caller.id)

    async def revoke(self, ctx: Context, key_id: str) -> bool:
        """Revoke one of the caller's keys (admins: anyone's). Another's key is :class:`NotFound`."""
        caller = await self.permissions.caller_with_scope(ctx, "keys")
        key = await self.store.get_api_key(key_id) if valid_id(key_id) else None
        if key is None or (key.user_id != caller.id and not is_admin(caller, ctx)):
            raise NotFound("no such API key")
        await self.store.revoke_api_key(
            key_id,
            audit=ctx.audit_event(
                "api_key_revoked",
                tenant_id=key.tenant_id,
                user_id=key.user_id,
                api_key_id=key_id,
                by=hash_user_id(caller.id),
            ),
        )
        return True
