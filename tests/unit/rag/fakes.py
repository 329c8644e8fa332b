"""In-memory stand-ins for the rag service's adapters (Postgres rows, Chroma, the embedder), for unit
tests of the service logic; the integration tests run the real ones."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import replace
from datetime import UTC, datetime

from services.rag.chroma import ChunkRecord
from services.rag.repository import CollectionRow, DocumentRow


class FakeRepository:
    def __init__(self) -> None:
        self.collections: dict[str, CollectionRow] = {}
        self.documents: dict[tuple[str, str], DocumentRow] = {}

    async def create_collection(self, cid, tenant, name, description, chroma_name):
        if any(c.tenant_id == tenant and c.name == name for c in self.collections.values()):
            return None
        row = CollectionRow(cid, tenant, name, description, chroma_name, datetime.now(UTC))
        self.collections[cid] = row
        return row

    async def find_collection(self, tenant, ref):
        for c in self.collections.values():
            if c.tenant_id == tenant and ref in (c.name, c.id):
                return c
        return None

    async def list_collections(self, tenant):
        return [c for c in self.collections.values() if c.tenant_id == tenant]

    async def all_collections(self):
        return list(self.collections.values())

    async def delete_collection(self, cid):
        self.collections.pop(cid, None)
        for key in [k for k in self.documents if k[0] == cid]:
            del self.documents[key]
        return True

    async def get_document(self, cid, did, *, ready_only=True):
        row = self.documents.get((cid, did))
        return row if row and (row.status == "ready" or not ready_only) else None

    async def find_by_hash(self, cid, sha):
        return next(
            (d for (c, _), d in self.documents.items() if c == cid and d.content_sha256 == sha and d.status == "ready"),
            None,
        )

    async def list_documents(self, cid, limit, offset):
        rows = [d for (c, _), d in self.documents.items() if c == cid and d.status == "ready"]
        return rows[offset : offset + limit], len(rows)

    async def begin_document(self, row):
        now = datetime.now(UTC)
        self.documents[(row.collection_id, row.id)] = replace(row, status="indexing", created_at=now, updated_at=now)

    async def mark_ready(self, cid, did):
        row = replace(self.documents[(cid, did)], status="ready")
        self.documents[(cid, did)] = row
        return row

    async def delete_document(self, cid, did):
        return self.documents.pop((cid, did), None) is not None

    async def unfinished_documents(self, cid):
        return [d for (c, _), d in self.documents.items() if c == cid and d.status == "indexing"]

    async def ready_documents(self, cid, ids, wanted=None):
        wanted = wanted or {}
        return {
            d.id: d
            for (c, _), d in self.documents.items()
            if c == cid
            and d.id in ids
            and d.status == "ready"
            and all(d.metadata.get(k) == v for k, v in wanted.items())
        }

    async def matching_documents(self, cid, wanted, limit):
        return sorted(d.id for d in (await self.ready_documents(cid, [k[1] for k in self.documents], wanted)).values())[
            :limit
        ]


class FakeChroma:
    def __init__(self) -> None:
        self.collections: dict[str, dict[str, tuple[str, dict, list[float]]]] = {}
        self.fail_upsert = False

    async def ensure(self, name):
        self.collections.setdefault(name, {})

    async def drop(self, name):
        self.collections.pop(name, None)

    async def collection_names(self):
        return list(self.collections)

    async def upsert(self, name, ids, embeddings, texts, metadatas):
        store = self.collections.setdefault(name, {})
        for i, e, t, m in zip(ids, embeddings, texts, metadatas, strict=True):
            store[i] = (t, m, e)
            if self.fail_upsert and len(store) >= 1:
                raise ConnectionError("chroma went away half way")

    async def delete(self, name, ids):
        for i in ids:
            self.collections.get(name, {}).pop(i, None)

    async def delete_document(self, name, did):
        store = self.collections.get(name, {})
        for i in [i for i, (_, m, _) in store.items() if m["document_id"] == did]:
            del store[i]

    async def document_chunk_ids(self, name, did):
        return [i for i, (_, m, _) in self.collections.get(name, {}).items() if m["document_id"] == did]

    async def query(self, name, vector, n, document_ids=None):
        rows = [
            ChunkRecord(i, t, dict(m), cosine(vector, e))
            for i, (t, m, e) in self.collections.get(name, {}).items()
            if document_ids is None or m["document_id"] in document_ids
        ]
        return sorted(rows, key=lambda r: -r.cosine)[:n]

    async def get(self, name, ids):
        store = self.collections.get(name, {})
        return {i: (ChunkRecord(i, store[i][0], dict(store[i][1])), store[i][2]) for i in ids if i in store}

    async def count(self, name):
        return len(self.collections.get(name, {}))

    async def all_chunks(self, name):
        return [ChunkRecord(i, t, dict(m)) for i, (t, m, _) in self.collections.get(name, {}).items()]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class FakeEmbedder:
    """Hashed bag of words: texts sharing words are close, as a real embedder would have them."""

    dimensions = 64

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts):
        self.calls.append(list(texts))
        vectors = []
        for text in texts:
            vector = [0.0] * self.dimensions
            for word in re.findall(r"\w+", text.lower()):
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimensions] += 1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors
