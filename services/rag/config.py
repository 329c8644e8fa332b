"""RAG service settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from services.common.secrets import SecretScanningSettings
from services.common.settings import DatabaseSettings, ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS


class RagSettings(ServiceSettings, DatabaseSettings, SecretScanningSettings):
    grpc_port: int = Field(GRPC_PORTS["rag"], alias="GOBLIN_RAG_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["rag"], alias="GOBLIN_RAG_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_RAG_PROBE_PORT", ge=0, le=65535)
    # http://host:port of a Chroma server; unset: an embedded PersistentClient in chroma_path.
    chroma_url: str | None = Field(None, alias="CHROMA_URL")
    chroma_path: Path | None = Field(None, alias="GOBLIN_CHROMA_PATH")
    # Keyword (BM25) indexes, one directory per collection; default GOBLIN_HOME/rag/keyword.
    keyword_path: Path | None = Field(None, alias="GOBLIN_RAG_KEYWORD_PATH")
    # The embedding model's files, for its tokenizer (chunk sizes are counted in its tokens).
    embed_model_dir: Path | None = Field(None, alias="GOBLIN_EMBED_MODEL_DIR")
    chunk_tokens: int = Field(256, alias="GOBLIN_RAG_CHUNK_TOKENS", ge=16, le=512)
    chunk_overlap: int = Field(32, alias="GOBLIN_RAG_CHUNK_OVERLAP", ge=0, le=256)
    embed_batch: int = Field(64, alias="GOBLIN_RAG_EMBED_BATCH", ge=1, le=2048)
    # A query is a hit when its best cosine similarity reaches this (the request may say otherwise).
    # Defaults measured on bench/data/pydocs (bench/RESULTS.md, "RAG: retrieval quality"): 0.50 gave
    # 89.7 % hits on answerable questions and 0 % false hits (0.35: 22 % false hits); weighted fusion
    # with w = 0.5 gave the best nDCG@10 (0.850, against 0.833 for RRF, 0.793 BM25, 0.772 vectors).
    min_score: float = Field(0.50, alias="GOBLIN_RAG_MIN_SCORE", ge=-1.0, le=1.0)
    fusion: Literal["rrf", "weighted"] = Field("weighted", alias="GOBLIN_RAG_FUSION")
    vector_weight: float = Field(0.5, alias="GOBLIN_RAG_VECTOR_WEIGHT", ge=0.0, le=1.0)

    @field_validator("chroma_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("CHROMA_URL: must be an http:// or https:// URL of a Chroma server")
        return value or None

    @model_validator(mode="after")
    def _default_path(self) -> RagSettings:
        if self.production and self.chroma_url is None:
            # SPEC: the embedded stores are for one developer's machine.
            raise ValueError("CHROMA_URL: required in production (the embedded Chroma is refused)")
        if self.chroma_path is None:
            self.chroma_path = self.goblin_home / "chroma"
        if self.keyword_path is None:
            self.keyword_path = self.goblin_home / "rag" / "keyword"
        if self.chunk_overlap > self.chunk_tokens // 2:
            raise ValueError("GOBLIN_RAG_CHUNK_OVERLAP: at most half of GOBLIN_RAG_CHUNK_TOKENS")
        return self
