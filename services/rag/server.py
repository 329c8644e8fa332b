"""The RAG process. Collections and queries arrive with the RAG issue; until then it serves health
and reflection, and is ready once Postgres and Chroma answer."""

from __future__ import annotations

import grpc

from goblin.v1 import rag_pb2_grpc
from services.common.stores import PostgresStore, StoreBackedService
from services.rag.chroma import ChromaStore
from services.rag.config import RagSettings


class RagServer(StoreBackedService):
    name = "rag"
    grpc_service_names = ["goblin.v1.Rag"]

    def __init__(self, settings: RagSettings) -> None:
        assert settings.chroma_path is not None
        self.settings = settings
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), schema="rag")
        self.chroma = ChromaStore(settings.chroma_url, settings.chroma_path)
        self.stores = [self.postgres, self.chroma]

    def register(self, server: grpc.aio.Server) -> None:
        rag_pb2_grpc.add_RagServicer_to_server(rag_pb2_grpc.RagServicer(), server)
