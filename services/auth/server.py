"""The auth service process: Postgres and Redis, admin bootstrap, the Auth servicer."""

from __future__ import annotations

import grpc

from goblin.v1 import auth_pb2_grpc
from services.auth.config import AuthSettings
from services.auth.repository import AuthRepository
from services.auth.service import AuthService
from services.auth.servicer import AuthServicer
from services.common.stores import PostgresStore, RedisStore, StoreBackedService


class AuthServer(StoreBackedService):
    name = "auth"
    grpc_service_names = ["goblin.v1.Auth"]

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value())
        self.redis = RedisStore(settings.redis_url.get_secret_value())
        self.stores = [self.postgres, self.redis]
        self.service = AuthService(AuthRepository(self.postgres))

    def register(self, server: grpc.aio.Server) -> None:
        auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(self.service), server)

    async def start(self) -> None:
        await super().start()
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        assert self.settings.admin_key_file is not None
        await self.service.bootstrap_admin(self.settings.admin_email, password, self.settings.admin_key_file)
