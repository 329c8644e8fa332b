"""Everything the gateway's routes share, in one typed object built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.secrets import DetectionPoint, SecretGuard
from services.common.tls import load_grpc_tls
from services.gateway.caches import JwksCache, PrincipalCache
from services.gateway.clients import GatewayClients
from services.gateway.config import GatewaySettings
from services.gateway.invalidation import Invalidations
from services.gateway.ratelimit import TrustedProxies
from services.gateway.stores import GatewayStores


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Settings, backend clients, the gateway's stores, the request-side secret guard, the caches
    of auth answers and the feed that keeps them in step with the other replicas (routes that change a
    principal call ``invalidations.forget``). Dependencies read it through
    ``services.gateway.deps.gateway_state``."""

    settings: GatewaySettings
    clients: GatewayClients
    stores: GatewayStores
    secret_guard: SecretGuard
    principals: PrincipalCache
    invalidations: Invalidations
    jwks: JwksCache
    proxies: TrustedProxies

    @classmethod
    def build(cls, settings: GatewaySettings) -> GatewayState:
        """The state for ``settings``: channels and stores are created, nothing is connected yet."""
        stores = GatewayStores(settings)
        principals = PrincipalCache(settings.auth_cache_ttl_s)
        return cls(
            settings=settings,
            clients=GatewayClients(settings.peer_addresses(), load_grpc_tls(settings, "gateway")),
            stores=stores,
            secret_guard=SecretGuard(
                DetectionPoint.request_creation,
                policy=settings.secret_policy,
                audit=stores.audit,
                enabled=settings.secret_scanning,
            ),
            principals=principals,
            invalidations=Invalidations(principals, settings.redis_url.get_secret_value()),
            jwks=JwksCache(),
            proxies=TrustedProxies(settings.trusted_proxy_list),
        )

    async def start(self) -> None:
        """Start connecting the stores and subscribing to the other replicas' invalidations (both in
        the background; the channels connect on first use)."""
        await self.stores.start()
        await self.invalidations.start()

    async def close(self) -> None:
        """Stop the invalidation feed, close the stores and every channel."""
        await self.invalidations.stop()
        await self.stores.stop()
        await self.clients.close()
