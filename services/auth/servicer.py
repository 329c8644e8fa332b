"""gRPC translation for the auth service: protobuf in, a call on one of :class:`AuthService`'s areas, protobuf
out. Domain errors become gRPC status codes in the shared server interceptor, not here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import grpc

from goblin.v1 import auth_pb2, auth_pb2_grpc, common_pb2
from services.auth.context import Context
from services.auth.credentials import Principal
from services.auth.repository import ApiKeyInfo, PasskeyRecord, TenantRecord, UserRecord
from services.auth.service import AuthService
from services.auth.sessions import TokenPair
from services.auth.signing import Jwks
from services.common.context import current_correlation_id
from services.common.principal import current_principal


def _ts(value: datetime | None) -> int:
    return int(value.timestamp()) if value else 0


def context_from_proto(ctx: common_pb2.RequestContext) -> Context:
    """The caller of this call: who they are comes from the principal the server interceptor verified
    (services.common.principal), never from the request; a call without one is anonymous."""
    principal = current_principal()
    if principal is None:
        return Context(correlation_id=current_correlation_id(), client_ip=ctx.client_ip)
    return Context(
        correlation_id=current_correlation_id(),
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        api_key_id=principal.api_key_id,
        scopes=principal.scopes,
        client_ip=ctx.client_ip,
    )


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
        requests_per_day=principal.requests_per_day,
        tenant_daily_budget_usd=principal.tenant_daily_budget_usd,
        key_tokens_per_day=principal.key_tokens_per_day,
    )


def user_to_proto(user: UserRecord) -> auth_pb2.User:
    return auth_pb2.User(
        id=user.id,
        email=user.email,
        role=user.role,
        tenant_id=user.tenant_id,
        created=_ts(user.created_at),
        active=user.is_active,
    )


def token_pair_to_proto(pair: TokenPair) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type="Bearer",
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
        user=user_to_proto(pair.user),
    )


def api_key_to_proto(key: ApiKeyInfo) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
        created=_ts(key.created_at),
        expires_at=_ts(key.expires_at),
        last_used=_ts(key.last_used_at),
        revoked=key.revoked_at is not None,
        user_id=key.user_id,
        tenant_id=key.tenant_id,
        tokens_per_day=key.tokens_per_day or 0,
    )


def passkey_to_proto(passkey: PasskeyRecord) -> auth_pb2.Passkey:
    return auth_pb2.Passkey(
        id=passkey.id,
        name=passkey.name,
        created=_ts(passkey.created_at),
        last_used=_ts(passkey.last_used_at),
        sign_count=passkey.sign_count,
    )


def tenant_to_proto(tenant: TenantRecord) -> auth_pb2.Tenant:
    return auth_pb2.Tenant(
        id=tenant.id,
        name=tenant.name,
        requests_per_day=tenant.requests_per_day or 0,
        tokens_per_day=tenant.tokens_per_day or 0,
        daily_budget_usd=tenant.daily_budget_usd or 0.0,
        created=_ts(tenant.created_at),
    )


def jwks_to_proto(jwks: Jwks) -> auth_pb2.Jwks:
    return auth_pb2.Jwks(
        json=json.dumps(jwks.keys, separators=(",", ":")),
        current_kid=jwks.current_kid,
        standby_kid=jwks.standby_kid,
    )


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, service: AuthService) -> None:
        self.service = service

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Principal:
        return principal_to_proto(await self.service.credentials.authenticate(request.credential))

    async def Register(self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        user = await self.service.users.register(
            context_from_proto(request.context),
            email=request.email,
            password=request.password,
            tenant_id=request.tenant_id,
            role=request.role,
        )
        return user_to_proto(user)

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> auth_pb2.TokenPair:
        pair = await self.service.sessions.login(
            context_from_proto(request.context), email=request.email, password=request.password
        )
        return token_pair_to_proto(pair)

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext) -> auth_pb2.TokenPair:
        return token_pair_to_proto(
            await self.service.sessions.refresh(context_from_proto(request.context), request.refresh_token)
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        revoked = await self.service.sessions.logout(
            context_from_proto(request.context),
            refresh_token=request.refresh_token,
            # The caller's own session only: a session id in the request is not proof of owning it.
            session_id=caller.session_id if (caller := current_principal()) is not None else "",
        )
        return auth_pb2.LogoutResponse(revoked=revoked)

    async def GetUser(self, request: auth_pb2.GetUserRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        return user_to_proto(await self.service.users.get(context_from_proto(request.context), request.user_id))

    async def UpdateUser(self, request: auth_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        user = await self.service.users.update(
            context_from_proto(request.context),
            request.user_id,
            active=request.active if request.HasField("active") else None,
            role=request.role if request.HasField("role") else None,
        )
        return user_to_proto(user)

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreatedApiKey:
        created = await self.service.api_keys.create(
            context_from_proto(request.context),
            name=request.name,
            scopes=list(request.scopes),
            expires_at=request.expires_at,
            user_id=request.user_id,
            tokens_per_day=request.tokens_per_day,
        )
        return auth_pb2.CreatedApiKey(key=api_key_to_proto(created.key), secret=created.secret)

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        keys = await self.service.api_keys.list_own(context_from_proto(request.context))
        return auth_pb2.ListApiKeysResponse(keys=[api_key_to_proto(k) for k in keys])

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        revoked = await self.service.api_keys.revoke(context_from_proto(request.context), request.key_id)
        return auth_pb2.RevokeApiKeyResponse(revoked=revoked)

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext) -> auth_pb2.Jwks:
        return jwks_to_proto(await self.service.signing.jwks())

    async def RotateSigningKeys(
        self, request: auth_pb2.RotateSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Jwks:
        return jwks_to_proto(await self.service.signing.rotate(context_from_proto(request.context)))

    async def PasskeyRegistrationOptions(
        self, request: auth_pb2.PasskeyOptionsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.PasskeyOptions:
        options = await self.service.passkeys.registration_options(context_from_proto(request.context))
        return auth_pb2.PasskeyOptions(options_json=options.options_json, challenge_id=options.challenge_id)

    async def PasskeyRegistrationVerify(
        self, request: auth_pb2.PasskeyVerifyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Passkey:
        passkey = await self.service.passkeys.registration_verify(
            context_from_proto(request.context),
            challenge_id=request.challenge_id,
            credential_json=request.credential_json,
            name=request.name,
        )
        return passkey_to_proto(passkey)

    async def PasskeyLoginOptions(
        self, request: auth_pb2.PasskeyOptionsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.PasskeyOptions:
        options = await self.service.passkeys.login_options(context_from_proto(request.context), email=request.email)
        return auth_pb2.PasskeyOptions(options_json=options.options_json, challenge_id=options.challenge_id)

    async def PasskeyLoginVerify(
        self, request: auth_pb2.PasskeyVerifyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.TokenPair:
        pair = await self.service.passkeys.login_verify(
            context_from_proto(request.context),
            challenge_id=request.challenge_id,
            credential_json=request.credential_json,
        )
        return token_pair_to_proto(pair)

    async def ListPasskeys(
        self, request: auth_pb2.ListPasskeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListPasskeysResponse:
        passkeys = await self.service.passkeys.list_own(context_from_proto(request.context))
        return auth_pb2.ListPasskeysResponse(passkeys=[passkey_to_proto(p) for p in passkeys])

    async def DeletePasskey(
        self, request: auth_pb2.DeletePasskeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.DeletePasskeyResponse:
        deleted = await self.service.passkeys.delete(context_from_proto(request.context), request.passkey_id)
        return auth_pb2.DeletePasskeyResponse(deleted=deleted)

    async def ChargeRequest(
        self, request: auth_pb2.ChargeRequestRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.QuotaStatus:
        status = await self.service.tenants.charge_request(context_from_proto(request.context))
        return auth_pb2.QuotaStatus(used=status.used, limit=status.limit, resets_at=status.resets_at)

    async def CreateTenant(
        self, request: auth_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Tenant:
        tenant = await self.service.tenants.create(
            context_from_proto(request.context),
            tenant_id=request.id,
            name=request.name,
            requests_per_day=request.requests_per_day,
            tokens_per_day=request.tokens_per_day,
            daily_budget_usd=request.daily_budget_usd,
        )
        return tenant_to_proto(tenant)

    async def UpdateTenant(
        self, request: auth_pb2.UpdateTenantRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Tenant:
        changes: dict[str, Any] = {
            name: getattr(request, name)
            for name in ("name", "requests_per_day", "tokens_per_day", "daily_budget_usd")
            if request.HasField(name)
        }
        tenant = await self.service.tenants.update(context_from_proto(request.context), request.id, changes)
        return tenant_to_proto(tenant)

    async def ListTenants(
        self, request: auth_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListTenantsResponse:
        tenants = await self.service.tenants.list_all(context_from_proto(request.context))
        return auth_pb2.ListTenantsResponse(tenants=[tenant_to_proto(t) for t in tenants])

    async def ListAuditEvents(
        self, request: auth_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListAuditEventsResponse:
        rows = await self.service.audit_trail.recent(context_from_proto(request.context), request.limit)
        return auth_pb2.ListAuditEventsResponse(
            events=[
                auth_pb2.AuditEventSummary(
                    id=r.id,
                    event_type=r.event_type,
                    location=r.location,
                    tenant_id=r.tenant_id,
                    correlation_id=r.correlation_id,
                    created=_ts(r.created_at),
                )
                for r in rows
            ]
        )
