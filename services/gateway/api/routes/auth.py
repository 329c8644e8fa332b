"""Auth routes. The Auth issue adds register/login/refresh/logout, passkeys and API keys here."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.gateway.deps import PrincipalDep

router = APIRouter(prefix="/auth", tags=["auth"])


class Me(BaseModel):
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    api_key_id: str | None = None


@router.get("/me", response_model=Me, summary="The authenticated caller")
async def me(principal: PrincipalDep) -> Me:
    return Me(
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        email=principal.email,
        role=principal.role,
        scopes=list(principal.scopes),
        api_key_id=principal.api_key_id or None,
    )
