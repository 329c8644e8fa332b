"""``GET /.well-known/jwks.json``: the public keys that verify Goblin's access tokens.

Published: the current key, the standby key (before it ever signs, so a verifier that caches this
document already knows it when a rotation promotes it) and retired keys whose tokens may still be
alive. Kept here for a few seconds, so the document costs no round trip per request.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from goblin.v1 import auth_pb2
from services.gateway.deps import BackendsDep, call_auth

router = APIRouter(tags=["auth"])

LOCAL_CACHE_S = 5.0
# What verifiers may cache. A rotation promotes a key that has been published for at least this long
# only if rotations are at least this far apart; `goblin keys rotate` is a daily-to-quarterly affair.
PUBLIC_MAX_AGE_S = 300


def forget_jwks(app: FastAPI) -> None:
    """After a rotation through this gateway: serve the new key set at once."""
    app.state.jwks_document = None


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (RFC 7517)")
async def jwks(request: Request, backends: BackendsDep) -> Response:
    cached = getattr(request.app.state, "jwks_document", None)
    if cached is None or time.monotonic() - cached[0] > LOCAL_CACHE_S:
        reply = await call_auth(backends.auth.GetJwks, auth_pb2.GetJwksRequest())
        cached = (time.monotonic(), reply.json)
        request.app.state.jwks_document = cached
    return Response(
        cached[1],
        media_type="application/json",
        headers={"Cache-Control": f"public, max-age={PUBLIC_MAX_AGE_S}"},
    )
