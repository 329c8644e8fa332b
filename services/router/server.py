"""The router process: Postgres for the books, a channel to the inference service for `local`."""

from __future__ import annotations

import grpc

from goblin.v1 import router_pb2_grpc
from services.common.grpc_client import open_channel
from services.common.stores import PostgresStore, StoreBackedService
from services.router.config import RouterSettings
from services.router.ledger import RoutingLedger
from services.router.providers.local import LocalProvider
from services.router.service import RouterService
from services.router.servicer import RouterServicer


class RouterServer(StoreBackedService):
    name = "router"
    grpc_service_names = ["goblin.v1.Router"]

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value())
        self.ledger = RoutingLedger(self.postgres)
        self.stores = [self.postgres, self.ledger]
        self.inference_channel = open_channel(settings.inference_addr)
        self.service = RouterService([LocalProvider(self.inference_channel)], self.ledger)

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(self.service), server)

    async def stop(self) -> None:
        await super().stop()
        await self.inference_channel.close()
