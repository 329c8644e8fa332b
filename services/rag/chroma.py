"""ChromaDB: a server at CHROMA_URL, or an embedded PersistentClient on disk.

Goblin computes every embedding itself (the inference service's MiniLM) and hands Chroma vectors only.
Chroma's default embedding function would download a model the first time a text arrived without a
vector, and ``embedding_function=None`` does not stop that (measured: chromadb 1.5.9 still fetches it),
so each collection is opened with :class:`PrecomputedOnly`, which refuses to embed anything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from services.common.errors import Unavailable

# Chroma pages reads; a page of chunk texts is a few megabytes at most.
_PAGE = 1000


class PrecomputedOnly(EmbeddingFunction[Documents]):
    """An embedding function that never embeds: a text without a vector is a bug, not a download."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's parameter name
        raise RuntimeError("goblin passes precomputed embeddings; Chroma must not compute any")

    @staticmethod
    def name() -> str:
        return "goblin-precomputed"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> PrecomputedOnly:
        return PrecomputedOnly()

    def is_legacy(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk as Chroma holds it; ``cosine`` is set on query results."""

    id: str
    text: str
    metadata: dict[str, Any]
    cosine: float = 0.0


class ChromaStore:
    def __init__(self, url: str | None, path: Path) -> None:
        self.url = url
        self.path = path
        self._client: Any = None
        self._collections: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            raise Unavailable("chroma not connected yet")
        return self._client

    def _connect(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        # Chroma's product telemetry would try to reach the internet; Goblin never lets it.
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.url:
            parsed = urlparse(self.url)
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=settings,
            )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(self.path), settings=settings)
        client.heartbeat()
        return client

    async def start(self) -> None:
        # Chroma's client is synchronous; keep its I/O off the event loop.
        self._client = await asyncio.to_thread(self._connect)

    async def healthy(self) -> bool:
        return self._client is not None and bool(await asyncio.to_thread(self._client.heartbeat))

    async def stop(self) -> None:
        self._client = None
        self._collections.clear()

    def _collection(self, name: str) -> Any:
        collection = self._collections.get(name)
        if collection is None:
            # Cosine space: the vectors are L2-normalised, and a distance converts to similarity as 1 - d.
            collection = self.client.get_or_create_collection(
                name, embedding_function=PrecomputedOnly(), metadata={"hnsw:space": "cosine"}
            )
            self._collections[name] = collection
        return collection

    async def ensure(self, name: str) -> None:
        """Create the Chroma collection ``name`` if it does not exist."""
        await asyncio.to_thread(self._collection, name)

    async def drop(self, name: str) -> None:
        """Delete the Chroma collection ``name`` and every vector in it (a missing one is fine)."""

        def drop() -> None:
            self._collections.pop(name, None)
            try:
                self.client.delete_collection(name)
            except Exception as exc:  # chromadb's NotFoundError differs between the embedded and the HTTP client
                if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                    raise

        await asyncio.to_thread(drop)

    async def upsert(
        self, name: str, ids: list[str], embeddings: list[list[float]], texts: list[str], metadatas: list[dict]
    ) -> None:
        """Write chunks with their precomputed vectors."""

        def upsert() -> None:
            collection = self._collection(name)
            for start in range(0, len(ids), _PAGE):
                end = start + _PAGE
                collection.upsert(
                    ids=ids[start:end],
                    embeddings=embeddings[start:end],
                    documents=texts[start:end],
                    metadatas=metadatas[start:end],
                )

        await asyncio.to_thread(upsert)

    async def delete(self, name: str, ids: list[str]) -> None:
        """Remove these chunk ids (missing ones are ignored)."""
        if ids:
            await asyncio.to_thread(lambda: self._collection(name).delete(ids=ids))

    async def delete_document(self, name: str, document_id: str) -> None:
        """Remove every chunk of a document, whatever their ids."""
        await asyncio.to_thread(lambda: self._collection(name).delete(where={"document_id": document_id}))

    async def document_chunk_ids(self, name: str, document_id: str) -> list[str]:
        """The ids of a document's chunks in Chroma."""

        def ids() -> list[str]:
            return list(self._collection(name).get(where={"document_id": document_id}, include=[])["ids"])

        return await asyncio.to_thread(ids)

    async def query(
        self, name: str, embedding: list[float], n: int, document_ids: list[str] | None = None
    ) -> list[ChunkRecord]:
        """The ``n`` nearest chunks, nearest first, with their cosine similarity; limited to chunks of
        ``document_ids`` when it is given."""

        def query() -> list[ChunkRecord]:
            collection = self._collection(name)
            where = {"document_id": {"$in": document_ids}} if document_ids is not None else None
            result = collection.query(
                query_embeddings=[embedding], n_results=n, where=where, include=["documents", "metadatas", "distances"]
            )
            return [
                ChunkRecord(id=i, text=t or "", metadata=dict(m or {}), cosine=1.0 - float(d))
                for i, t, m, d in zip(
                    result["ids"][0],
                    result["documents"][0],
                    result["metadatas"][0],
                    result["distances"][0],
                    strict=True,
                )
            ]

        if document_ids is not None and not document_ids:
            return []
        return await asyncio.to_thread(query)

    async def get(self, name: str, ids: list[str]) -> dict[str, tuple[ChunkRecord, list[float]]]:
        """These chunks with their vectors, by id (missing ones are left out)."""

        def get() -> dict[str, tuple[ChunkRecord, list[float]]]:
            result = self._collection(name).get(ids=ids, include=["documents", "metadatas", "embeddings"])
            return {
                i: (ChunkRecord(id=i, text=t or "", metadata=dict(m or {})), [float(x) for x in e])
                for i, t, m, e in zip(
                    result["ids"], result["documents"], result["metadatas"], result["embeddings"], strict=True
                )
            }

        if not ids:
            return {}
        return await asyncio.to_thread(get)

    async def count(self, name: str) -> int:
        """How many chunks the collection holds."""
        return await asyncio.to_thread(lambda: int(self._collection(name).count()))

    async def all_chunks(self, name: str) -> list[ChunkRecord]:
        """Every chunk of the collection, without vectors (to rebuild its keyword index)."""

        def read() -> list[ChunkRecord]:
            collection = self._collection(name)
            chunks: list[ChunkRecord] = []
            offset = 0
            while True:
                page = collection.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
                chunks.extend(
                    ChunkRecord(id=i, text=t or "", metadata=dict(m or {}))
                    for i, t, m in zip(page["ids"], page["documents"], page["metadatas"], strict=True)
                )
                if len(page["ids"]) < _PAGE:
                    return chunks
                offset += _PAGE

        return await asyncio.to_thread(read)

    async def collection_names(self) -> list[str]:
        """The names of every collection in this Chroma."""

        def names() -> list[str]:
            return [c if isinstance(c, str) else c.name for c in self.client.list_collections()]

        return await asyncio.to_thread(names)
