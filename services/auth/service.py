"""The auth service's logic, one object per area; no gRPC here.

Areas: :mod:`~services.auth.credentials` (bearer credential -> principal), :mod:`~services.auth.users`,
:mod:`~services.auth.sessions` (password sign-in, refresh, sign-out), :mod:`~services.auth.api_keys`,
:mod:`~services.auth.passkeys`, :mod:`~services.auth.tenants` (and the request quota) and
:mod:`~services.auth.signing` (JWKS, rotation). Each checks its requester with the one
:class:`~services.auth.permissions.Permissions`. The store (Postgres), the ephemeral state (Redis) and
the key ring are passed in; requests carry a :class:`~services.auth.context.Context` filled by the
gateway from a verified credential.
"""

from __future__ import annotations

from typing import Protocol

from services.auth.accounts import Accounts
from services.auth.api_keys import ApiKeys, ApiKeyStore
from services.auth.audit_trail import AuditStore, AuditTrail
from services.auth.credentials import ApiKeyLookup, Credentials
from services.auth.keyring import KeyRing
from services.auth.passkeys import ChallengeStore, Passkeys, PasskeyStore
from services.auth.passwords import Passwords
from services.auth.permissions import Permissions
from services.auth.policy import AuthPolicy
from services.auth.revocations import EndedSessionCache, SessionLiveness, SessionRevocations
from services.auth.sessions import Sessions, SessionState, SessionStore
from services.auth.signing import SigningKeys
from services.auth.tenants import RequestCounter, TenantCache, Tenants, TenantStore
from services.auth.tokens import TokenCodec
from services.auth.users import Users, UserStore


class AuthStore(
    UserStore,
    SessionStore,
    SessionLiveness,
    ApiKeyLookup,
    ApiKeyStore,
    PasskeyStore,
    TenantStore,
    AuditStore,
    Protocol,
):
    """Every area's needs from Postgres (:class:`~services.auth.repository.AuthRepository`)."""


class Ephemeral(EndedSessionCache, SessionState, ChallengeStore, RequestCounter, Protocol):
    """Every area's short-lived state shared by the replicas (:class:`~services.auth.ephemeral.RedisEphemeral`)."""


class AuthService:
    """The areas, wired to one store, one ephemeral state and one key ring."""

    def __init__(
        self,
        store: AuthStore,
        ephemeral: Ephemeral,
        keyring: KeyRing,
        *,
        passwords: Passwords,
        accounts: Accounts,
        tokens: TokenCodec,
        policy: AuthPolicy,
    ) -> None:
        self.keyring = keyring
        self.passwords = passwords
        self.accounts = accounts
        permissions = Permissions(store)
        tenant_cache = TenantCache(store)
        revocations = SessionRevocations(store, ephemeral, remember_s=policy.access_token_lifetime_s)
        self.credentials = Credentials(store, revocations, tokens, tenant_cache)
        self.users = Users(store, accounts=accounts, passwords=passwords, permissions=permissions, policy=policy)
        self.sessions = Sessions(store, ephemeral, tokens=tokens, passwords=passwords, policy=policy)
        self.api_keys = ApiKeys(store, accounts=accounts, permissions=permissions)
        self.passkeys = Passkeys(
            store, ephemeral, sessions=self.sessions, permissions=permissions, webauthn=policy.webauthn
        )
        self.tenants = Tenants(store, ephemeral, accounts=accounts, permissions=permissions, cache=tenant_cache)
        self.signing = SigningKeys(keyring, permissions=permissions)
        self.audit_trail = AuditTrail(store, permissions=permissions)
