"""``GET /.well-known/jwks.json``: the public keys that verify Goblin's access tokens.

Published: the current key, the standby key (before it ever signs, so a verifier that caches this
document already knows it when a rotation promotes it) and retired keys whose tokens may still be
alive. Kept in the gateway for a few seconds (``GatewayState.jwks``), so the document costs no
round trip per request; a rotation through this gateway forgets it at once.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from services.gateway.deps import StateDep

router = APIRouter(tags=["auth"])

# What verifiers may cache. A rotation promotes a key that has been published for at least this long
# only if rotations are at least this far apart; `goblin keys rotate` is a daily-to-quarterly affair.
PUBLIC_MAX_AGE_S = 300


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (RFC 7517)")
async def jwks(state: StateDep) -> Response:
    document = state.jwks.get()
    if document is None:
        document = await state.clients.auth.get_jwks()
        state.jwks.put(document)
    return Response(
        document,
        media_type="application/json",
        headers={"Cache-Control": f"public, max-age={PUBLIC_MAX_AGE_S}"},
    )
