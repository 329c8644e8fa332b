"""Bodies and answers of the ``/v1/collections`` routes, and the path parameters they take.

The rag service checks every value again (it trusts no caller); the limits here give a clear 400/422
at the edge, before a byte is sent on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from goblin.v1 import rag_pb2
from services.gateway.api.schemas.auth import Text

# A collection is named in a path by its name or its id; a document by its id.
CollectionRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the collection's name or id")]
DocumentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Metadata = Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=32)]


def _when(unix: int) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix else None


class CollectionCreateBody(BaseModel):
    name: Annotated[Text, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    description: Annotated[Text, Field(max_length=1024)] = ""


class CollectionOut(BaseModel):
    id: str
    name: str
    description: str
    document_count: int
    chunk_count: int
    created_at: datetime | None

    @classmethod
    def of(cls, c: rag_pb2.Collection) -> CollectionOut:
        return cls(
            id=c.id,
            name=c.name,
            description=c.description,
            document_count=c.document_count,
            chunk_count=c.chunk_count,
            created_at=_when(c.created),
        )


class CollectionList(BaseModel):
    data: list[CollectionOut]


class DocumentFields(BaseModel):
    """What a document may carry besides its content (the multipart form's other fields)."""

    title: Annotated[Text, Field(max_length=512)] = ""
    document_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] | None = None
    metadata: Metadata = Field(default_factory=dict)


class DocumentBody(DocumentFields):
    """A document sent as JSON text; files go as multipart/form-data (field ``file``)."""

    text: Annotated[Text, Field(min_length=1)]
    content_type: Annotated[str, Field(max_length=100)] = ""
    filename: Annotated[Text, Field(max_length=512)] = ""


class DocumentOut(BaseModel):
    id: str
    collection: str
    title: str
    source: str
    content_type: str
    content_sha256: str
    size_bytes: int
    chunk_count: int
    redactions: int
    metadata: dict[str, str]
    created_at: datetime | None
    updated_at: datetime | None
    unchanged: bool = False

    @classmethod
    def of(cls, d: rag_pb2.Document) -> DocumentOut:
        return cls(
            id=d.id,
            collection=d.collection,
            title=d.title,
            source=d.source,
            content_type=d.content_type,
            content_sha256=d.content_sha256,
            size_bytes=d.size_bytes,
            chunk_count=d.chunk_count,
            redactions=d.redactions,
            metadata=dict(d.metadata),
            created_at=_when(d.created),
            updated_at=_when(d.updated),
            unchanged=d.unchanged,
        )


class DocumentList(BaseModel):
    data: list[DocumentOut]
    total: int


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class QueryBody(BaseModel):
    query: Annotated[Text, Field(min_length=1, max_length=4000)]
    top_k: Annotated[int, Field(ge=1, le=50)] = 5
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    filter: Metadata = Field(default_factory=dict)
    merge_neighbors: bool = False


class QueryHitOut(BaseModel):
    document_id: str
    chunk_id: str
    title: str
    source: str
    text: str
    score: float = Field(description="cosine similarity to the query")
    fused_score: float = Field(description="the hybrid (rank-fusion) score the hits are ordered by")
    chunk_index: int
    heading_path: list[str]
    metadata: dict[str, str]

    @classmethod
    def of(cls, h: rag_pb2.QueryHit) -> QueryHitOut:
        return cls(
            document_id=h.document_id,
            chunk_id=h.chunk_id,
            title=h.title,
            source=h.citation.source,
            text=h.text,
            score=round(h.score, 6),
            fused_score=round(h.fused_score, 6),
            chunk_index=h.chunk_index,
            heading_path=list(h.heading_path),
            metadata=dict(h.metadata),
        )


class QueryOut(BaseModel):
    collection: str
    hits: list[QueryHitOut]
    hit: bool = Field(description="the best cosine reached min_score")
    best_score: float
    min_score: float

    @classmethod
    def of(cls, collection: str, r: rag_pb2.QueryResponse) -> QueryOut:
        return cls(
            collection=collection,
            hits=[QueryHitOut.of(h) for h in r.hits],
            hit=r.hit,
            best_score=round(r.best_score, 6),
            min_score=round(r.min_score, 6),
        )
