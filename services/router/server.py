"""The router process: Postgres for the books and the catalog rows, Redis for budgets and the response
cache, a gRPC channel to the inference service for ``local``, pooled HTTP clients for the rest, and a
gRPC channel to the rag service for chats that name a collection."""

from __future__ import annotations

import grpc

from goblin.v1 import router_pb2_grpc
from services.common.audit import AuditLog
from services.common.grpc_client import open_channel
from services.common.grpc_server import StartupRefused
from services.common.journal import service_journal
from services.common.secrets import DetectionPoint, SecretGuard
from services.common.settings import ConfigError
from services.common.stores import PostgresStore, RedisStore, StoreBackedService
from services.common.tls import load_grpc_tls
from services.router.budget import Budgets, SpendCounters
from services.router.cache import ResponseCache
from services.router.catalog import Catalog, CatalogManager, ProviderSpec, load_file_layers
from services.router.config import RouterSettings
from services.router.ledger import RoutingLedger
from services.router.local_watch import LocalHealthWatch
from services.router.provider_state import ProviderStates
from services.router.providers.http import HttpOptions
from services.router.providers.local import LocalProvider
from services.router.rag import RagStep
from services.router.rag_client import RagClient
from services.router.registry import ProviderRegistry
from services.router.repository import RouterRepository
from services.router.service import RetryPolicy, RouterService
from services.router.servicer import RouterServicer
from services.router.usage import UsageBooks


class RouterServer(StoreBackedService):
    name = "router"
    grpc_service_names = ["goblin.v1.Router"]

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        try:
            file_layers = load_file_layers(settings.catalog_file)
        except ConfigError as exc:
            raise StartupRefused(f"router catalog: {exc}") from None
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), schema="router")
        self.redis = RedisStore(settings.redis_url.get_secret_value())
        self.repository = RouterRepository(self.postgres)
        self.ledger = RoutingLedger(
            self.postgres, journal=service_journal(settings.goblin_home, "router", "routing_requests")
        )
        self.audit = AuditLog(self.postgres, journal=service_journal(settings.goblin_home, "router", "audit_events"))
        tls = load_grpc_tls(settings, "router")
        self.inference_channel = open_channel(settings.inference_addr, "inference", tls)
        self.rag_channel = open_channel(settings.rag_addr, "rag", tls)
        self.registry = ProviderRegistry(
            key_for=self._provider_key,
            base_url_for=self._provider_base_url,
            options=HttpOptions(
                timeout_s=settings.provider_timeout_s,
                connect_timeout_s=settings.provider_connect_timeout_s,
                max_connections=settings.provider_max_connections,
            ),
            local=LocalProvider(self.inference_channel),
            local_address=settings.inference_addr,
        )
        self.states = ProviderStates(
            failure_threshold=settings.circuit_failures,
            cooldown_s=settings.circuit_cooldown_s,
            probe_timeout_s=settings.provider_timeout_s,
            store=self.repository,
        )
        self.budgets = Budgets(
            SpendCounters(lambda: self.redis.client),
            self.repository,
            global_budget_usd=settings.daily_budget_usd,
            sync_s=settings.budget_sync_s,
            reconcile_s=settings.budget_reconcile_s,
        )
        cache = ResponseCache(lambda: self.redis.client, settings.llm_cache_ttl) if settings.llm_cache_ttl else None
        self.catalog = CatalogManager(
            file_layers, self.repository, self._catalog_changed, refresh_s=settings.catalog_refresh_s
        )
        try:
            self.registry.sync(self.catalog.current)
        except ConfigError as exc:  # a provider key's *_FILE cannot be read
            raise StartupRefused(f"router providers: {exc}") from None
        self.service = RouterService(
            self.catalog.current,
            self.registry,
            self.ledger,
            self.states,
            budgets=self.budgets,
            cache=cache,
            retry=RetryPolicy(retries=settings.retries, base_s=settings.retry_base_s, max_s=settings.retry_max_s),
            guard=SecretGuard(
                DetectionPoint.worker_processing,
                policy=settings.secret_policy,
                audit=self.audit,
                enabled=settings.secret_scanning,
            ),
        )
        self.books = UsageBooks(self.repository, settings.daily_budget_usd)
        self.local_watch = LocalHealthWatch(self.states, self.inference_channel)
        self.stores = [
            self.postgres,
            self.redis,
            self.ledger,
            self.audit,
            self.states,
            self.budgets,
            self.catalog,
            self.local_watch,
        ]

    def _provider_key(self, spec: ProviderSpec) -> str | None:
        return self.settings.provider_key(spec.name, spec.api_key_env)

    def _provider_base_url(self, spec: ProviderSpec) -> str:
        return self.settings.provider_base_url(spec.name) or spec.base_url

    def _catalog_changed(self, catalog: Catalog) -> None:
        self.registry.sync(catalog)
        self.service.set_catalog(catalog)

    def register(self, server: grpc.aio.Server) -> None:
        rag = RagStep(self.service.planner.smallest_context, max_context_tokens=self.settings.rag_context_tokens)
        rag_client = RagClient(self.rag_channel, self.settings.rag_timeout_s)
        router_pb2_grpc.add_RouterServicer_to_server(
            RouterServicer(self.service, self.books, rag=rag, rag_client=rag_client), server
        )

    async def stop(self) -> None:
        await self.service.aclose()
        await super().stop()
        await self.registry.aclose()
        await self.inference_channel.close()
        await self.rag_channel.close()
