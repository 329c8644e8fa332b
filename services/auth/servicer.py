"""gRPC translation for the auth service: protobuf in, :class:`AuthService` call, protobuf out."""

from __future__ import annotations

import grpc

from goblin.v1 import auth_pb2, auth_pb2_grpc
from services.auth.service import AuthService, Principal


def principal_to_proto(principal: Principal) -> auth_pb2.Principal:
    return auth_pb2.Principal(
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        email=principal.email,
        role=principal.role,
        scopes=principal.scopes,
        api_key_id=principal.api_key_id,
        session_id=principal.session_id,
        expires_at=principal.expires_at,
    )


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, service: AuthService) -> None:
        self.service = service

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Principal:
        return principal_to_proto(await self.service.authenticate(request.credential))
