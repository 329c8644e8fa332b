"""Hybrid retrieval: the query's vector against Chroma and its words against BM25, fused.

Only chunks of ready documents come back (an ingestion under way or a failed one is invisible), each
with its cosine similarity to the query (keyword-only hits have their vector fetched for it) and its
fused score. A query is a hit when the best cosine reaches the threshold.

A query may span several collections of one tenant (``POST /api/query`` without a collection): each
collection is searched as alone, and the two rankings are merged across them before fusion, by cosine
(one scale everywhere) and by BM25 score (each index's own statistics: close, not identical, scales).
Which collections are searched is the caller's decision, made from the verified principal only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from services.rag import validation
from services.rag.chroma import ChromaStore, ChunkRecord
from services.rag.embedder import InferenceEmbedder
from services.rag.fusion import fuse
from services.rag.keyword_store import KeywordStore
from services.rag.metrics import BEST_SCORE, QUERIES, QUERY_LATENCY
from services.rag.naming import document_of
from services.rag.repository import CollectionRow, DocumentRow, RagRepository

# Documents a metadata filter may select before the query is refused as too broad for Chroma's $in.
MAX_FILTERED_DOCUMENTS = 10_000
# Collections one query may span: each costs a Chroma query and a keyword search.
MAX_COLLECTIONS = 100


@dataclass(frozen=True, slots=True)
class QueryParams:
    query: str
    top_k: int = 0
    min_score: float | None = None
    filter: dict[str, str] = field(default_factory=dict)
    merge_neighbors: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    collection: CollectionRow
    chunk_id: str
    document: DocumentRow
    text: str
    index: int
    heading: str
    cosine: float
    fused: float


@dataclass(frozen=True, slots=True)
class QueryResult:
    hits: list[Hit]
    hit: bool
    best_score: float
    min_score: float


@dataclass(frozen=True, slots=True)
class RetrievalSettings:
    """The hit threshold and fusion (services.rag.config.RagSettings gives the measured defaults)."""

    min_score: float = 0.50
    fusion: str = "weighted"
    vector_weight: float = 0.5


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class Retriever:
    def __init__(
        self,
        repository: RagRepository,
        chroma: ChromaStore,
        keywords: KeywordStore,
        embedder: InferenceEmbedder,
        settings: RetrievalSettings,
    ) -> None:
        self.repository = repository
        self.chroma = chroma
        self.keywords = keywords
        self.embedder = embedder
        self.settings = settings

    async def query(self, collection: CollectionRow, params: QueryParams) -> QueryResult:
        """The best ``top_k`` passages of the collection for the query."""
        return await self.query_many([collection], params)

    async def query_many(self, collections: Sequence[CollectionRow], params: QueryParams) -> QueryResult:
        """The best ``top_k`` passages of these collections (one tenant's: the caller chose them) for the
        query; none for no collections."""
        started = time.perf_counter()
        text = validation.query_text(params.query)
        top_k = validation.top_k(params.top_k)
        threshold = self.settings.min_score if params.min_score is None else validation.min_score(params.min_score)
        wanted = validation.metadata(params.filter, "filter")
        if len(collections) > MAX_COLLECTIONS:
            raise validation.InvalidArgument(
                f"collection: {len(collections)} collections are more than one query searches "
                f"({MAX_COLLECTIONS}); name one"
            )
        n = max(top_k * 4, 20)
        scopes: list[tuple[CollectionRow, set[str] | None]] = []
        for collection in collections:
            allowed: set[str] | None = None
            if wanted:
                matching = await self.repository.matching_documents(collection.id, wanted, MAX_FILTERED_DOCUMENTS + 1)
                if len(matching) > MAX_FILTERED_DOCUMENTS:
                    raise validation.InvalidArgument(
                        f"filter: matches more than {MAX_FILTERED_DOCUMENTS} documents; narrow it"
                    )
                allowed = set(matching)
            if allowed is None or allowed:
                scopes.append((collection, allowed))
        hits: list[Hit] = []
        if scopes:
            [vector] = await self.embedder.embed([text])
            hits = await self._search(scopes, text, vector, n, top_k, wanted)
        if params.merge_neighbors:
            hits = merge_neighbors(hits)
        best = max((h.cosine for h in hits), default=0.0)
        hit = bool(hits) and best >= threshold
        QUERIES.labels("true" if hit else "false").inc()
        BEST_SCORE.observe(best)
        QUERY_LATENCY.observe(time.perf_counter() - started)
        return QueryResult(hits=hits, hit=hit, best_score=best, min_score=threshold)

    async def _candidates(
        self, collection: CollectionRow, text: str, vector: list[float], n: int, allowed: set[str] | None
    ) -> tuple[list[ChunkRecord], list[tuple[str, float]]]:
        """The collection's nearest chunks and best keyword matches, each its top n."""
        nearest = await self.chroma.query(
            collection.chroma_name, vector, n, sorted(allowed) if allowed is not None else None
        )
        keyword = await self.keywords.search(collection.id, collection.chroma_name, text, n)
        if allowed is not None:
            keyword = [(i, s) for i, s in keyword if document_of(i) in allowed]
        return nearest, keyword

    async def _search(
        self,
        scopes: list[tuple[CollectionRow, set[str] | None]],
        text: str,
        vector: list[float],
        n: int,
        top_k: int,
        wanted: dict[str, str],
    ) -> list[Hit]:
        found = await asyncio.gather(*(self._candidates(c, text, vector, n, allowed) for c, allowed in scopes))
        # Keys are (collection index, chunk id): document ids, and so chunk ids, repeat across collections.
        vector_hits: list[tuple[tuple[int, str], float]] = []
        keyword_hits: list[tuple[tuple[int, str], float]] = []
        records: dict[tuple[int, str], tuple[ChunkRecord, float]] = {}
        for position, (nearest, keyword) in enumerate(found):
            vector_hits.extend(((position, r.id), r.cosine) for r in nearest)
            keyword_hits.extend(((position, i), s) for i, s in keyword)
            records.update({(position, r.id): (r, r.cosine) for r in nearest})
        # Stable sorts: within one collection the order stays the stores' own.
        vector_hits.sort(key=lambda item: -item[1])
        keyword_hits.sort(key=lambda item: -item[1])
        names = {key: f"{key[0]}/{key[1]}" for key, _ in (*vector_hits, *keyword_hits)}
        keys = {name: key for key, name in names.items()}
        fused_by_name = fuse(
            [(names[k], s) for k, s in vector_hits][:n],
            [(names[k], s) for k, s in keyword_hits][:n],
            k=n,
            method=self.settings.fusion,
            vector_weight=self.settings.vector_weight,
        )
        fused = [(keys[name], score) for name, score in fused_by_name]
        documents: dict[int, dict[str, DocumentRow]] = {}
        for position, (collection, _) in enumerate(scopes):
            ids = sorted({document_of(chunk) for (p, chunk), _ in fused if p == position})
            if ids:
                documents[position] = await self.repository.ready_documents(collection.id, ids, wanted)
        fused = [((p, c), s) for (p, c), s in fused if document_of(c) in documents.get(p, {})][:top_k]
        for position, (collection, _) in enumerate(scopes):
            missing = [c for (p, c), _ in fused if p == position and (p, c) not in records]
            if missing:
                for chunk, (record, embedding) in (await self.chroma.get(collection.chroma_name, missing)).items():
                    records[(position, chunk)] = (record, _cosine(vector, embedding))
        hits = []
        for (position, chunk), score in fused:
            if (position, chunk) not in records:
                continue  # removed from Chroma since the keyword index was read
            record, cosine = records[(position, chunk)]
            hits.append(
                Hit(
                    collection=scopes[position][0],
                    chunk_id=chunk,
                    document=documents[position][document_of(chunk)],
                    text=record.text,
                    index=int(record.metadata.get("index", 0)),
                    heading=str(record.metadata.get("heading", "")),
                    cosine=cosine,
                    fused=score,
                )
            )
        return hits


def merge_neighbors(hits: list[Hit]) -> list[Hit]:
    """Adjacent chunks of one document become one passage, at the better-ranked chunk's place, its text
    the chunks' in reading order (their overlap, a few tokens, appears twice) and its scores the best."""
    merged: list[Hit] = []
    for hit in hits:
        for position, kept in enumerate(merged):
            span = kept.chunk_id.rpartition(":")[2].split("-")
            first, last = int(span[0]), int(span[-1])
            same_document = kept.collection.id == hit.collection.id and kept.document.id == hit.document.id
            if not same_document or not (hit.index == first - 1 or hit.index == last + 1):
                continue
            before = hit.index < first
            text = f"{hit.text}\n\n{kept.text}" if before else f"{kept.text}\n\n{hit.text}"
            low, high = (hit.index, last) if before else (first, hit.index)
            merged[position] = replace(
                kept,
                chunk_id=f"{kept.document.id}:{low}-{high}",
                text=text,
                index=low,
                cosine=max(kept.cosine, hit.cosine),
            )
            break
        else:
            merged.append(hit)
    return merged
