"""Signing keys as requests see them: the published JWKS, and an admin's rotation.

The keys themselves (generation, sealing, the ring each replica holds) are :mod:`services.auth.keyring`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from services.auth.context import Context
from services.auth.keyring import Rotation
from services.auth.metrics import KEY_ROTATIONS
from services.auth.permissions import Permissions
from services.auth.repository import AuditEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Jwks:
    keys: dict[str, Any]
    current_kid: str
    standby_kid: str


class SigningKeyRing(Protocol):
    async def jwks(self) -> tuple[dict[str, Any], str, str]: ...
    async def rotate(self, audit: AuditEvent) -> Rotation: ...


class SigningKeys:
    def __init__(self, keyring: SigningKeyRing, *, permissions: Permissions) -> None:
        self.keyring = keyring
        self.permissions = permissions

    async def jwks(self) -> Jwks:
        """The public keys verifiers need: current, standby, and retired ones still verifying."""
        keys, current, standby = await self.keyring.jwks()
        return Jwks(keys, current, standby)

    async def rotate(self, ctx: Context) -> Jwks:
        """Retire the current key, promote the standby, publish a new standby (admin only)."""
        admin = await self.permissions.admin(ctx)
        rotation = await self.keyring.rotate(
            ctx.audit_event("signing_keys_rotated", tenant_id=admin.tenant_id, user_id=admin.id, by="api")
        )
        KEY_ROTATIONS.inc()
        log.info(
            "signing keys rotated",
            extra={"current_kid": rotation.current_kid, "standby_kid": rotation.standby_kid},
        )
        return await self.jwks()
