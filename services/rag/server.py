"""The rag process: Postgres (schema `rag`), Chroma, the keyword indexes on disk, and a mutual-TLS
channel to the inference service for embeddings. Ready once Postgres and Chroma answer and the
start-up housekeeping (half-indexed documents, orphaned Chroma collections, keyword indexes) is done."""

from __future__ import annotations

import grpc

from goblin.v1 import rag_pb2_grpc
from services.common.audit import AuditLog
from services.common.grpc_client import open_channel
from services.common.grpc_server import StartupRefused
from services.common.journal import service_journal
from services.common.secrets import DetectionPoint, SecretGuard
from services.common.stores import PostgresStore, StoreBackedService
from services.common.tls import load_grpc_tls
from services.inference.models import ModelNotFound
from services.rag.chroma import ChromaStore
from services.rag.config import RagSettings
from services.rag.embedder import InferenceEmbedder
from services.rag.ingest import Chunker, load_tokenizer
from services.rag.keyword_store import KeywordStore
from services.rag.repository import RagRepository
from services.rag.retrieval import RetrievalSettings, Retriever
from services.rag.service import RagService
from services.rag.servicer import RagServicer


class RagServer(StoreBackedService):
    name = "rag"
    grpc_service_names = ["goblin.v1.Rag"]

    def __init__(self, settings: RagSettings) -> None:
        assert settings.chroma_path is not None and settings.keyword_path is not None
        self.settings = settings
        try:
            tokenizer = load_tokenizer(settings.embed_model_dir)
        except ModelNotFound as exc:
            raise StartupRefused(f"rag: the embedding tokenizer: {exc}") from None
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), schema="rag")
        self.chroma = ChromaStore(settings.chroma_url, settings.chroma_path)
        self.audit = AuditLog(self.postgres, journal=service_journal(settings.goblin_home, "rag", "audit_events"))
        self.inference_channel = open_channel(settings.inference_addr, "inference", load_grpc_tls(settings, "rag"))
        repository = RagRepository(self.postgres)
        keywords = KeywordStore(settings.keyword_path, self.chroma)
        embedder = InferenceEmbedder(self.inference_channel, batch=settings.embed_batch)
        self.service = RagService(
            repository,
            self.chroma,
            keywords,
            embedder,
            SecretGuard(
                DetectionPoint.document_indexing,
                policy=settings.secret_policy,
                audit=self.audit,
                enabled=settings.secret_scanning,
            ),
            Chunker(tokenizer, chunk_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap),
        )
        self.retriever = Retriever(
            repository,
            self.chroma,
            keywords,
            embedder,
            RetrievalSettings(
                min_score=settings.min_score, fusion=settings.fusion, vector_weight=settings.vector_weight
            ),
        )
        self.stores = [self.postgres, self.chroma, self.audit]

    async def start(self) -> None:
        await super().start()
        await self.service.recover()

    def register(self, server: grpc.aio.Server) -> None:
        rag_pb2_grpc.add_RagServicer_to_server(RagServicer(self.service, self.retriever), server)

    async def stop(self) -> None:
        await super().stop()
        await self.inference_channel.close()
