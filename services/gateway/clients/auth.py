"""The auth service as the gateway uses it: one method per RPC, taking plain values and the caller's
RequestContext, returning the auth service's messages (the route schemas turn each into its HTTP
answer once, with no intermediate copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from goblin.v1 import auth_pb2, auth_pb2_grpc, common_pb2
from services.gateway.clients.base import ServiceClient

# Every Auth RPC is a few database reads or writes; one that takes longer than this is stuck.
AUTH_TIMEOUT_S = 5.0

Context = common_pb2.RequestContext


class AuthClient(ServiceClient):
    """Typed calls to ``goblin.v1.Auth``; failures are raised as ``ApiError`` (401, 403, 409, 429 ...)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__("auth", channel)
        self._stub = auth_pb2_grpc.AuthStub(channel)

    # -- every protected request -----------------------------------------------------------------
    async def authenticate(self, credential: str) -> auth_pb2.Principal:
        """The principal a bearer credential (API key or access JWT) stands for; 401 if it is invalid."""
        return await self.call(
            self._stub.Authenticate, auth_pb2.AuthenticateRequest(credential=credential), AUTH_TIMEOUT_S
        )

    async def charge_request(self, context: Context) -> None:
        """One request against the caller's tenant's requests/day quota (429 ``quota_exceeded`` when spent)."""
        await self.call(self._stub.ChargeRequest, auth_pb2.ChargeRequestRequest(context=context), AUTH_TIMEOUT_S)

    async def get_jwks(self) -> str:
        """The public signing keys, as the JWKS JSON document."""
        reply = await self.call(self._stub.GetJwks, auth_pb2.GetJwksRequest(), AUTH_TIMEOUT_S)
        return reply.json

    # -- accounts and sessions ---------------------------------------------------------------------
    async def register(
        self, context: Context, *, email: str, password: str, tenant_id: str, role: str
    ) -> auth_pb2.User:
        """Create an account."""
        request = auth_pb2.RegisterRequest(
            context=context, email=email, password=password, tenant_id=tenant_id, role=role
        )
        return await self.call(self._stub.Register, request, AUTH_TIMEOUT_S)

    async def login(self, context: Context, *, email: str, password: str) -> auth_pb2.TokenPair:
        """Sign in with email and password."""
        request = auth_pb2.LoginRequest(context=context, email=email, password=password)
        return await self.call(self._stub.Login, request, AUTH_TIMEOUT_S)

    async def refresh(self, context: Context, *, refresh_token: str) -> auth_pb2.TokenPair:
        """A new token pair for a refresh token (usable once)."""
        request = auth_pb2.RefreshRequest(context=context, refresh_token=refresh_token)
        return await self.call(self._stub.Refresh, request, AUTH_TIMEOUT_S)

    async def logout(self, context: Context, *, refresh_token: str, session_id: str) -> bool:
        """End a session; whether one was revoked."""
        request = auth_pb2.LogoutRequest(context=context, refresh_token=refresh_token, session_id=session_id)
        return (await self.call(self._stub.Logout, request, AUTH_TIMEOUT_S)).revoked

    # -- API keys ----------------------------------------------------------------------------------
    async def create_api_key(
        self,
        context: Context,
        *,
        name: str,
        scopes: list[str],
        expires_at: int,
        user_id: str,
        tokens_per_day: int,
    ) -> auth_pb2.CreatedApiKey:
        """A new API key, its secret included (the only time it is ever sent)."""
        request = auth_pb2.CreateApiKeyRequest(
            context=context,
            name=name,
            scopes=scopes,
            expires_at=expires_at,
            user_id=user_id,
            tokens_per_day=tokens_per_day,
        )
        return await self.call(self._stub.CreateApiKey, request, AUTH_TIMEOUT_S)

    async def list_api_keys(self, context: Context) -> Sequence[auth_pb2.ApiKey]:
        """The caller's API keys (never their secrets)."""
        request = auth_pb2.ListApiKeysRequest(context=context)
        return (await self.call(self._stub.ListApiKeys, request, AUTH_TIMEOUT_S)).keys

    async def revoke_api_key(self, context: Context, key_id: str) -> bool:
        """Revoke an API key; whether it was revoked."""
        request = auth_pb2.RevokeApiKeyRequest(context=context, key_id=key_id)
        return (await self.call(self._stub.RevokeApiKey, request, AUTH_TIMEOUT_S)).revoked

    # -- passkeys ----------------------------------------------------------------------------------
    async def passkey_registration_options(self, context: Context) -> auth_pb2.PasskeyOptions:
        """A challenge for adding a passkey to the caller's account."""
        request = auth_pb2.PasskeyOptionsRequest(context=context)
        return await self.call(self._stub.PasskeyRegistrationOptions, request, AUTH_TIMEOUT_S)

    async def passkey_registration_verify(
        self, context: Context, *, challenge_id: str, credential_json: str, name: str
    ) -> auth_pb2.Passkey:
        """The passkey the browser created for the challenge, now registered."""
        request = auth_pb2.PasskeyVerifyRequest(
            context=context, challenge_id=challenge_id, credential_json=credential_json, name=name
        )
        return await self.call(self._stub.PasskeyRegistrationVerify, request, AUTH_TIMEOUT_S)

    async def passkey_login_options(self, context: Context, *, email: str) -> auth_pb2.PasskeyOptions:
        """A challenge for signing in with a passkey (discoverable ones when ``email`` is empty)."""
        request = auth_pb2.PasskeyOptionsRequest(context=context, email=email)
        return await self.call(self._stub.PasskeyLoginOptions, request, AUTH_TIMEOUT_S)

    async def passkey_login_verify(
        self, context: Context, *, challenge_id: str, credential_json: str
    ) -> auth_pb2.TokenPair:
        """Tokens for the passkey assertion the browser made."""
        request = auth_pb2.PasskeyVerifyRequest(
            context=context, challenge_id=challenge_id, credential_json=credential_json
        )
        return await self.call(self._stub.PasskeyLoginVerify, request, AUTH_TIMEOUT_S)

    async def list_passkeys(self, context: Context) -> Sequence[auth_pb2.Passkey]:
        """The caller's passkeys."""
        request = auth_pb2.ListPasskeysRequest(context=context)
        return (await self.call(self._stub.ListPasskeys, request, AUTH_TIMEOUT_S)).passkeys

    async def delete_passkey(self, context: Context, passkey_id: str) -> bool:
        """Remove one of the caller's passkeys; whether it was removed."""
        request = auth_pb2.DeletePasskeyRequest(context=context, passkey_id=passkey_id)
        return (await self.call(self._stub.DeletePasskey, request, AUTH_TIMEOUT_S)).deleted

    # -- administration ----------------------------------------------------------------------------
    async def list_tenants(self, context: Context) -> Sequence[auth_pb2.Tenant]:
        """Every tenant and its quotas (admin)."""
        request = auth_pb2.ListTenantsRequest(context=context)
        return (await self.call(self._stub.ListTenants, request, AUTH_TIMEOUT_S)).tenants

    async def list_audit_events(self, context: Context, limit: int) -> Sequence[auth_pb2.AuditEventSummary]:
        """The newest rows of the audit trail, every service's (admin)."""
        request = auth_pb2.ListAuditEventsRequest(context=context, limit=limit)
        return (await self.call(self._stub.ListAuditEvents, request, AUTH_TIMEOUT_S)).events

    async def create_tenant(
        self,
        context: Context,
        *,
        tenant_id: str,
        name: str,
        requests_per_day: int,
        tokens_per_day: int,
        daily_budget_usd: float,
    ) -> auth_pb2.Tenant:
        """A new tenant (admin); an empty ``tenant_id`` is derived from the name."""
        request = auth_pb2.CreateTenantRequest(
            context=context,
            id=tenant_id,
            name=name,
            requests_per_day=requests_per_day,
            tokens_per_day=tokens_per_day,
            daily_budget_usd=daily_budget_usd,
        )
        return await self.call(self._stub.CreateTenant, request, AUTH_TIMEOUT_S)

    async def update_tenant(
        self, context: Context, tenant_id: str, changes: dict[str, str | int | float]
    ) -> auth_pb2.Tenant:
        """Change the named fields of a tenant (admin); fields not in ``changes`` stay as they are."""
        request = auth_pb2.UpdateTenantRequest(context=context, id=tenant_id, **changes)
        return await self.call(self._stub.UpdateTenant, request, AUTH_TIMEOUT_S)

    async def update_user(self, context: Context, user_id: str, changes: dict[str, bool | str]) -> auth_pb2.User:
        """Switch an account off or on, or change its role (admin); fields not in ``changes`` stay."""
        request = auth_pb2.UpdateUserRequest(context=context, user_id=user_id, **changes)
        return await self.call(self._stub.UpdateUser, request, AUTH_TIMEOUT_S)

    async def rotate_signing_keys(self, context: Context) -> auth_pb2.Jwks:
        """Promote the standby signing key, retire the current one, publish a new standby (admin)."""
        request = auth_pb2.RotateSigningKeysRequest(context=context)
        return await self.call(self._stub.RotateSigningKeys, request, AUTH_TIMEOUT_S)
