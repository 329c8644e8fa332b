"""The executor process. Task running arrives with the executor issue; until then it serves health
and reflection, and is ready once its Postgres schema is current."""

from __future__ import annotations

import grpc

from goblin.v1 import executor_pb2_grpc
from services.common.stores import PostgresStore, StoreBackedService
from services.executor.config import ExecutorSettings


class ExecutorServer(StoreBackedService):
    name = "executor"
    grpc_service_names = ["goblin.v1.Executor"]

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), schema="executor")
        self.stores = [self.postgres]

    def register(self, server: grpc.aio.Server) -> None:
        executor_pb2_grpc.add_ExecutorServicer_to_server(executor_pb2_grpc.ExecutorServicer(), server)
