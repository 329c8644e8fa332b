"""The auth service process: Postgres and Redis, signing keys, admin bootstrap, the Auth servicer.

:func:`make_passwords` and :func:`make_keyring` are also what ``goblin users|keys`` use, so the
commands hash and seal exactly as the service does.
"""

from __future__ import annotations

import grpc
from argon2 import PasswordHasher, Type

from goblin.v1 import auth_pb2_grpc
from services.auth.accounts import Accounts
from services.auth.config import AuthPolicySettings, AuthSettings
from services.auth.ephemeral import RedisEphemeral
from services.auth.keyring import KeyCipher, KeyRing, load_key_encryption_key
from services.auth.passwords import Passwords
from services.auth.policy import AuthPolicy
from services.auth.repository import AuthRepository
from services.auth.service import AuthService
from services.auth.servicer import AuthServicer
from services.auth.tokens import TokenCodec
from services.common.stores import PostgresStore, RedisStore, StoreBackedService


def make_passwords(settings: AuthPolicySettings) -> Passwords:
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    return Passwords(hasher, concurrency=settings.argon2_concurrency, min_length=settings.password_min_length)


def make_keyring(settings: AuthPolicySettings, repository: AuthRepository) -> KeyRing:
    return KeyRing(
        repository,
        KeyCipher(load_key_encryption_key(settings)),
        algorithm=settings.jwt_algorithm,
        refresh_s=settings.signing_key_refresh_s,
        access_token_ttl_s=settings.access_token_ttl_s,
        leeway_s=settings.jwt_leeway_s,
    )


class AuthServer(StoreBackedService):
    name = "auth"
    grpc_service_names = ["goblin.v1.Auth"]

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), schema="auth")
        self.redis = RedisStore(settings.redis_url.get_secret_value())
        self.stores = [self.postgres, self.redis]
        repository = AuthRepository(self.postgres)
        passwords = make_passwords(settings)
        self.keyring = make_keyring(settings, repository)
        self.service = AuthService(
            repository,
            RedisEphemeral(lambda: self.redis.client),
            self.keyring,
            passwords=passwords,
            accounts=Accounts(repository, passwords),
            tokens=TokenCodec(
                self.keyring,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_s=settings.access_token_ttl_s,
                leeway_s=settings.jwt_leeway_s,
            ),
            policy=AuthPolicy.from_settings(settings),
        )

    def register(self, server: grpc.aio.Server) -> None:
        auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(self.service), server)

    async def start(self) -> None:
        await super().start()
        await self.keyring.ensure()
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        assert self.settings.admin_key_file is not None
        await self.service.users.bootstrap_admin(self.settings.admin_email, password, self.settings.admin_key_file)
