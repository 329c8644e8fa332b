"""What a requester may do: the scope rule, the admin rule, and the checks every area runs first.

A credential's scopes come from the signed principal the gateway made for the request (the servicer
builds the :class:`Context` from it alone, never from request fields); the role and whether the account still exists
and is active come from the database on every check, so a demoted or disabled admin loses the power
at once, whatever their access token still says.
"""

from __future__ import annotations

from typing import Protocol

from services.auth.accounts import valid_id
from services.auth.context import Context
from services.auth.repository import UserRecord
from services.common import scopes
from services.common.errors import PermissionDenied, Unauthenticated
from services.common.scopes import has_scope

ADMIN_ONLY = "admin only (role admin with the 'admin' scope)"


class UserLookup(Protocol):
    async def get_user(self, user_id: str) -> UserRecord | None: ...


def is_admin(user: UserRecord, ctx: Context) -> bool:
    """Admin powers need both the role (from the database) and the ``admin`` scope (from the credential):
    an admin's narrow API key is not an admin credential."""
    return scopes.is_admin(user.role, ctx.scopes)


def require_admin(user: UserRecord, ctx: Context, message: str = ADMIN_ONLY) -> None:
    if not is_admin(user, ctx):
        raise PermissionDenied(message)


def require_grantable(ctx: Context, scopes: list[str]) -> None:
    """A credential cannot hand out scopes it lacks (a ``chat``+``keys`` key cannot make an ``admin`` key)."""
    if has_scope(ctx.scopes, "*"):
        return
    beyond = [s for s in scopes if s not in ctx.scopes]
    if beyond:
        raise PermissionDenied(f"a key cannot have scopes its creator lacks: {', '.join(beyond)}")


def is_full_session(ctx: Context) -> bool:
    """A signed-in session (``*``, no API key): the only credential as wide as the account itself."""
    return not ctx.api_key_id and "*" in ctx.scopes


def require_full_session(ctx: Context, what: str) -> None:
    """Scopes only narrow: whatever signs in to a full session (a passkey) is enrolled by a full session,
    never by an API key, whatever its scopes, or a ``keys`` key would buy its holder every power of the
    account (an admin's included)."""
    if not is_full_session(ctx):
        raise PermissionDenied(f"{what} needs a signed-in session, not an API key", code="insufficient_scope")


class Permissions:
    """The requester checks, each returning the requester's account as the database has it now."""

    def __init__(self, users: UserLookup) -> None:
        self.users = users

    async def caller(self, ctx: Context) -> UserRecord:
        """The signed-in, active account behind ``ctx``, or :class:`Unauthenticated`."""
        if not ctx.user_id:
            raise Unauthenticated("sign in first")
        if not valid_id(ctx.user_id):
            raise Unauthenticated("this account is disabled or gone")
        user = await self.users.get_user(ctx.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("this account is disabled or gone")
        return user

    async def caller_with_scope(self, ctx: Context, scope: str) -> UserRecord:
        user = await self.caller(ctx)
        if not has_scope(ctx.scopes, scope):
            raise PermissionDenied(f"this credential lacks the {scope!r} scope", code="insufficient_scope")
        return user

    async def full_session(self, ctx: Context, what: str) -> UserRecord:
        """The caller, who must be signed in with a session (see :func:`require_full_session`)."""
        user = await self.caller(ctx)
        require_full_session(ctx, what)
        return user

    async def admin(self, ctx: Context) -> UserRecord:
        user = await self.caller(ctx)
        require_admin(user, ctx)
        return user
