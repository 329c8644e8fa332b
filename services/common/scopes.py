"""The two authorisation rules every service applies the same way, in one place.

- A credential holds a scope when its scopes name it or hold ``"*"`` (a signed-in session, or a key made
  with every scope).
- Admin powers need both the account's role ``admin`` and a credential holding the ``admin`` scope: an
  admin's API key scoped to ``chat`` is not an admin credential.

The gateway applies them to auth's answer, auth to its own records, and every other service to the
signed principal (:class:`services.common.principal.Principal`).
"""

from __future__ import annotations

from collections.abc import Collection

ALL_SCOPES = "*"
ADMIN_ROLE = "admin"
ADMIN_SCOPE = "admin"


def has_scope(scopes: Collection[str], scope: str) -> bool:
    """Whether a credential with ``scopes`` holds ``scope``."""
    return ALL_SCOPES in scopes or scope in scopes


def is_admin(role: str, scopes: Collection[str]) -> bool:
    """Whether an account with ``role``, using a credential with ``scopes``, may act as an admin."""
    return role == ADMIN_ROLE and has_scope(scopes, ADMIN_SCOPE)
