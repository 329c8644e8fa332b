"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures."""

from __future__ import annotations

from typing import Annotated

import grpc
from fastapi import Depends, Request

from goblin.v1 import auth_pb2
from services.common.context import current_correlation_id
from services.gateway.clients import Backends
from services.gateway.config import GatewaySettings
from services.gateway.errors import ApiError, api_error_from_grpc


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_backends(request: Request) -> Backends:
    return request.app.state.backends


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]


def bearer_credential(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not credential.strip():
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer credential: send 'Authorization: Bearer <API key or access token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credential.strip()


async def current_principal(request: Request, backends: BackendsDep) -> auth_pb2.Principal:
    """The verified caller; 401 for a missing or invalid credential."""
    credential = bearer_credential(request)
    try:
        principal = await backends.auth.Authenticate(
            auth_pb2.AuthenticateRequest(credential=credential, correlation_id=current_correlation_id()),
            timeout=5,
        )
    except grpc.aio.AioRpcError as exc:
        error = api_error_from_grpc(exc, service="auth")
        if error.status_code == 401:
            error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        raise error from None
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[auth_pb2.Principal, Depends(current_principal)]
