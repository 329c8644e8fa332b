"""The router process. Its routing logic arrives with the chat-path and router issues; until then
it serves health and reflection, and is ready once its Postgres schema is current."""

from __future__ import annotations

import grpc

from goblin.v1 import router_pb2_grpc
from services.common.stores import PostgresStore, StoreBackedService
from services.router.config import RouterSettings


class RouterServer(StoreBackedService):
    name = "router"
    grpc_service_names = ["goblin.v1.Router"]

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value())
        self.stores = [self.postgres]

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServicer_to_server(router_pb2_grpc.RouterServicer(), server)
