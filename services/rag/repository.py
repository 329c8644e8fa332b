"""The rag schema in Postgres: collections per tenant and the documents indexed into them.

Every read and write names the tenant: a collection is looked up by (tenant, name) or (tenant, id),
so another tenant's collection is simply not found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.common.stores import PostgresStore


@dataclass(frozen=True, slots=True)
class CollectionRow:
    id: str
    tenant_id: str
    name: str
    description: str
    chroma_name: str
    created_at: datetime
    document_count: int = 0
    chunk_count: int = 0


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: str
    collection_id: str
    source: str
    title: str
    content_type: str
    content_sha256: str
    size_bytes: int
    chunk_count: int
    redactions: int
    status: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)


_COLLECTION_COLUMNS = """c.id, c.tenant_id, c.name, c.description, c.chroma_name, c.created_at,
    (SELECT count(*) FROM search_documents d WHERE d.collection_id = c.id AND d.status = 'ready') AS document_count,
    (SELECT coalesce(sum(d.chunk_count), 0) FROM search_documents d
      WHERE d.collection_id = c.id AND d.status = 'ready') AS chunk_count"""
_DOCUMENT_COLUMNS = """id, collection_id, source, title, content_type, content_sha256, size_bytes, chunk_count,
    redactions, status, created_at, updated_at, metadata"""


def _collection(row: asyncpg.Record) -> CollectionRow:
    return CollectionRow(**dict(row))


def _document(row: asyncpg.Record) -> DocumentRow:
    values = dict(row)
    metadata = values.pop("metadata")
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return DocumentRow(**values, metadata={str(k): str(v) for k, v in (metadata or {}).items()})


class RagRepository:
    """Typed queries over the rag schema (the pool's search_path is that schema)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def create_collection(
        self, collection_id: str, tenant_id: str, name: str, description: str, chroma_name: str
    ) -> CollectionRow | None:
        """The new collection, or None when the tenant already has one of that name."""
        row = await self.store.pool.fetchrow(
            """INSERT INTO search_collections (id, tenant_id, name, description, chroma_name)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, name) DO NOTHING
               RETURNING id, tenant_id, name, description, chroma_name, created_at""",
            collection_id,
            tenant_id,
            name,
            description,
            chroma_name,
        )
        return None if row is None else _collection(row)

    async def find_collection(self, tenant_id: str, name_or_id: str) -> CollectionRow | None:
        """The tenant's collection with this name, else with this id; None for anyone else's."""
        row = await self.store.pool.fetchrow(
            f"""SELECT {_COLLECTION_COLUMNS} FROM search_collections c
                WHERE c.tenant_id = $1 AND (c.name = $2 OR c.id = $2)
                ORDER BY (c.name = $2) DESC LIMIT 1""",
            tenant_id,
            name_or_id,
        )
        return None if row is None else _collection(row)

    async def list_collections(self, tenant_id: str) -> list[CollectionRow]:
        """The tenant's collections by name."""
        rows = await self.store.pool.fetch(
            f"SELECT {_COLLECTION_COLUMNS} FROM search_collections c WHERE c.tenant_id = $1 ORDER BY c.name",
            tenant_id,
        )
        return [_collection(r) for r in rows]

    async def all_collections(self) -> list[CollectionRow]:
        """Every collection (start-up housekeeping only)."""
        rows = await self.store.pool.fetch(f"SELECT {_COLLECTION_COLUMNS} FROM search_collections c")
        return [_collection(r) for r in rows]

    async def delete_collection(self, collection_id: str) -> bool:
        """Drop the row (its documents go with it, ON DELETE CASCADE)."""
        status = await self.store.pool.execute("DELETE FROM search_collections WHERE id = $1", collection_id)
        return status.endswith(" 1")

    async def get_document(
        self, collection_id: str, document_id: str, *, ready_only: bool = True
    ) -> DocumentRow | None:
        """One document of the collection (only a ready one unless ``ready_only`` is false)."""
        row = await self.store.pool.fetchrow(
            f"""SELECT {_DOCUMENT_COLUMNS} FROM search_documents
                WHERE collection_id = $1 AND id = $2 AND (status = 'ready' OR NOT $3)""",
            collection_id,
            document_id,
            ready_only,
        )
        return None if row is None else _document(row)

    async def find_by_hash(self, collection_id: str, sha256: str) -> DocumentRow | None:
        """A ready document of the collection with exactly these bytes."""
        row = await self.store.pool.fetchrow(
            f"""SELECT {_DOCUMENT_COLUMNS} FROM search_documents
                WHERE collection_id = $1 AND content_sha256 = $2 AND status = 'ready'
                ORDER BY created_at LIMIT 1""",
            collection_id,
            sha256,
        )
        return None if row is None else _document(row)

    async def list_documents(self, collection_id: str, limit: int, offset: int) -> tuple[list[DocumentRow], int]:
        """A page of the collection's ready documents, oldest first, and how many there are."""
        async with self.store.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT {_DOCUMENT_COLUMNS} FROM search_documents
                    WHERE collection_id = $1 AND status = 'ready' ORDER BY created_at, id LIMIT $2 OFFSET $3""",
                collection_id,
                limit,
                offset,
            )
            total = await conn.fetchval(
                "SELECT count(*) FROM search_documents WHERE collection_id = $1 AND status = 'ready'", collection_id
            )
        return [_document(r) for r in rows], int(total)

    async def begin_document(self, row: DocumentRow) -> None:
        """Write the document as 'indexing' (replacing any row of the same id): from here until
        :meth:`mark_ready` no query or listing sees it."""
        await self.store.pool.execute(
            """INSERT INTO search_documents (id, collection_id, source, title, content_type, content_sha256,
                   size_bytes, chunk_count, redactions, status, metadata, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'indexing', $10::jsonb, now(), now())
               ON CONFLICT (collection_id, id) DO UPDATE SET source = EXCLUDED.source, title = EXCLUDED.title,
                   content_type = EXCLUDED.content_type, content_sha256 = EXCLUDED.content_sha256,
                   size_bytes = EXCLUDED.size_bytes, chunk_count = EXCLUDED.chunk_count,
                   redactions = EXCLUDED.redactions, status = 'indexing', metadata = EXCLUDED.metadata,
                   updated_at = now()""",
            row.id,
            row.collection_id,
            row.source,
            row.title,
            row.content_type,
            row.content_sha256,
            row.size_bytes,
            row.chunk_count,
            row.redactions,
            json.dumps(row.metadata),
        )

    async def mark_ready(self, collection_id: str, document_id: str) -> DocumentRow:
        """The last step of an ingestion: the document becomes visible."""
        row = await self.store.pool.fetchrow(
            f"""UPDATE search_documents SET status = 'ready', updated_at = now()
                WHERE collection_id = $1 AND id = $2 RETURNING {_DOCUMENT_COLUMNS}""",
            collection_id,
            document_id,
        )
        return _document(row)

    async def delete_document(self, collection_id: str, document_id: str) -> bool:
        status = await self.store.pool.execute(
            "DELETE FROM search_documents WHERE collection_id = $1 AND id = $2", collection_id, document_id
        )
        return status.endswith(" 1")

    async def unfinished_documents(self, collection_id: str) -> list[DocumentRow]:
        """Documents a crash left 'indexing'."""
        rows = await self.store.pool.fetch(
            f"SELECT {_DOCUMENT_COLUMNS} FROM search_documents WHERE collection_id = $1 AND status = 'indexing'",
            collection_id,
        )
        return [_document(r) for r in rows]

    async def ready_documents(
        self, collection_id: str, document_ids: list[str], metadata_filter: dict[str, str] | None = None
    ) -> dict[str, DocumentRow]:
        """Of ``document_ids``, the ready ones whose metadata holds every pair of ``metadata_filter``."""
        if not document_ids:
            return {}
        rows = await self.store.pool.fetch(
            f"""SELECT {_DOCUMENT_COLUMNS} FROM search_documents
                WHERE collection_id = $1 AND id = ANY($2::text[]) AND status = 'ready' AND metadata @> $3::jsonb""",
            collection_id,
            document_ids,
            json.dumps(metadata_filter or {}),
        )
        return {r["id"]: _document(r) for r in rows}

    async def matching_documents(self, collection_id: str, metadata_filter: dict[str, str], limit: int) -> list[str]:
        """Ids of up to ``limit`` ready documents whose metadata holds every pair of the filter."""
        rows = await self.store.pool.fetch(
            """SELECT id FROM search_documents WHERE collection_id = $1 AND status = 'ready'
               AND metadata @> $2::jsonb ORDER BY id LIMIT $3""",
            collection_id,
            json.dumps(metadata_filter),
            limit,
        )
        return [r["id"] for r in rows]
