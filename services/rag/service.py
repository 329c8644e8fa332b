"""The rag service's logic: collections and documents per tenant, and atomic ingestion.

No gRPC here (the servicer translates). The tenant of every call is the caller's, which the servicer
takes from the verified principal only. An ingestion does everything that can fail on the caller's
input (parse, redact, chunk, embed) before it writes anything, then writes Chroma, the keyword index
and, last, the Postgres row's 'ready'; a failure in between removes what was written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import uuid
from dataclasses import dataclass, field

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from services.common.secrets import SecretGuard
from services.rag import validation
from services.rag.chroma import ChromaStore
from services.rag.embedder import InferenceEmbedder
from services.rag.ingest import Chunk, Chunker, ParsedDocument, parse_document, parse_text
from services.rag.keyword_store import KeywordStore
from services.rag.metrics import CHUNKS_INDEXED, DOCUMENTS_INGESTED
from services.rag.naming import CHROMA_PREFIX, chroma_name, chunk_id, search_text
from services.rag.repository import CollectionRow, DocumentRow, RagRepository

log = logging.getLogger(__name__)

REDACTION_MARK = "[REDACTED:"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, from the verified principal."""

    tenant_id: str
    user_hash: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to add: ``text``, or ``content`` bytes with a file name and a type."""

    text: str = ""
    content: bytes = b""
    filename: str = ""
    content_type: str = ""
    title: str = ""
    document_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddResult:
    document: DocumentRow
    collection: CollectionRow
    unchanged: bool


class RagService:
    def __init__(
        self,
        repository: RagRepository,
        chroma: ChromaStore,
        keywords: KeywordStore,
        embedder: InferenceEmbedder,
        guard: SecretGuard,
        chunker: Chunker,
    ) -> None:
        self.repository = repository
        self.chroma = chroma
        self.keywords = keywords
        self.embedder = embedder
        self.guard = guard
        self.chunker = chunker

    # Collections ------------------------------------------------------------------------------------

    @staticmethod
    def _tenant(caller: Caller) -> str:
        if not caller.tenant_id:
            raise Unauthenticated("no caller: the rag service needs a signed principal")
        return caller.tenant_id

    async def collection(self, caller: Caller, ref: str) -> CollectionRow:
        """The caller's collection by name or id; NOT_FOUND for a missing one and for anyone else's."""
        found = await self.repository.find_collection(self._tenant(caller), validation.collection_ref(ref))
        if found is None:
            raise NotFound(f"collection {ref!r} not found", code="collection_not_found")
        return found

    async def create_collection(self, caller: Caller, name: str, description: str) -> CollectionRow:
        tenant = self._tenant(caller)
        validation.collection_name(name)
        validation.description(description)
        collection_id = f"col_{uuid.uuid4().hex}"
        await self.chroma.ensure(chroma_name(collection_id))
        row = await self.repository.create_collection(
            collection_id, tenant, name, description, chroma_name(collection_id)
        )
        if row is None:
            await self.chroma.drop(chroma_name(collection_id))
            raise AlreadyExists(f"collection {name!r} already exists", code="collection_exists")
        return row

    async def list_collections(self, caller: Caller) -> list[CollectionRow]:
        return await self.repository.list_collections(self._tenant(caller))

    async def delete_collection(self, caller: Caller, ref: str) -> None:
        """Delete the collection: its rows first (it is gone for every caller at once), then its vectors
        and keyword index (an orphan Chroma collection left by a crash is removed at the next start)."""
        collection = await self.collection(caller, ref)
        async with self.keywords.lock(collection.id):
            await self.repository.delete_collection(collection.id)
            await self.chroma.drop(collection.chroma_name)
            await self.keywords.drop(collection.id)

    # Documents --------------------------------------------------------------------------------------

    async def get_document(self, caller: Caller, ref: str, document_id: str) -> DocumentRow:
        collection = await self.collection(caller, ref)
        row = await self.repository.get_document(collection.id, validation.document_id(document_id))
        if row is None:
            raise NotFound(f"document {document_id!r} not found", code="document_not_found")
        return row

    async def list_documents(self, caller: Caller, ref: str, limit: int, offset: int) -> tuple[list[DocumentRow], int]:
        collection = await self.collection(caller, ref)
        limit = 100 if limit == 0 else limit
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidArgument("limit: between 1 and 1000; offset: not negative")
        return await self.repository.list_documents(collection.id, limit, offset)

    async def delete_document(self, caller: Caller, ref: str, document_id: str) -> None:
        collection = await self.collection(caller, ref)
        validation.document_id(document_id)
        async with self.keywords.lock(collection.id):
            row = await self.repository.get_document(collection.id, document_id, ready_only=False)
            if row is None:
                raise NotFound(f"document {document_id!r} not found", code="document_not_found")
            await self._purge(collection, document_id)

    async def _purge(self, collection: CollectionRow, document_id: str) -> None:
        """Remove a document's chunks from Chroma and the keyword index, then its row."""
        ids = await self.chroma.document_chunk_ids(collection.chroma_name, document_id)
        await self.chroma.delete_document(collection.chroma_name, document_id)
        await self.keywords.replace(collection.id, collection.chroma_name, remove=ids)
        await self.repository.delete_document(collection.id, document_id)

    async def add_document(self, caller: Caller, ref: str, new: NewDocument) -> AddResult:
        """Index a document; the same bytes again are a no-op returning the document there is, and the
        same ``document_id`` with other bytes replaces its chunks."""
        collection = await self.collection(caller, ref)
        metadata = validation.metadata(new.metadata)
        title = validation.title(new.title)
        raw = new.content if new.content else new.text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(raw).hexdigest()
        if new.document_id:
            document_id = validation.document_id(new.document_id)
            existing = await self.repository.get_document(collection.id, document_id)
        else:
            existing = await self.repository.find_by_hash(collection.id, digest)
            document_id = existing.id if existing else f"doc_{uuid.uuid4().hex[:24]}"
        if existing is not None and existing.content_sha256 == digest:
            return AddResult(existing, collection, unchanged=True)

        parsed = await asyncio.to_thread(self._parse, new)
        parsed, title, metadata, redactions = await self._redact(caller, parsed, title, metadata)
        chunks: list[Chunk] = await asyncio.to_thread(self.chunker.chunk, parsed)
        if not chunks:
            raise InvalidArgument("the document has no text to index")
        title = title or parsed.title
        texts = [search_text(c.text, title, " > ".join(c.heading_path)) for c in chunks]
        vectors = await self.embedder.embed(texts)
        row = DocumentRow(
            id=document_id,
            collection_id=collection.id,
            source=new.filename[:512],
            title=title,
            content_type=parsed.content_type,
            content_sha256=digest,
            size_bytes=len(raw),
            chunk_count=len(chunks),
            redactions=redactions,
            status="indexing",
            created_at=None,  # type: ignore[arg-type]  # set by Postgres
            updated_at=None,  # type: ignore[arg-type]
            metadata=metadata,
        )
        ready = await self._write(collection, row, chunks, texts, vectors)
        CHUNKS_INDEXED.inc(len(chunks))
        DOCUMENTS_INGESTED.labels("replaced" if existing else "added").inc()
        return AddResult(ready, collection, unchanged=False)

    @staticmethod
    def _parse(new: NewDocument) -> ParsedDocument:
        if new.content:
            return parse_document(new.content, filename=new.filename, content_type=new.content_type)
        return parse_text(new.text, filename=new.filename, content_type=new.content_type)

    async def _redact(
        self, caller: Caller, parsed: ParsedDocument, title: str, metadata: dict[str, str]
    ) -> tuple[ParsedDocument, str, dict[str, str], int]:
        """Secrets out of everything that will be stored, before it is chunked (a secret split across
        two chunks would be found in neither). Under the block policy this raises (400)."""
        keys = list(metadata)
        heading_count = [len(s.heading_path) for s in parsed.sections]
        texts = [parsed.title, title, *metadata.values()]
        for section in parsed.sections:
            texts.extend(section.heading_path)
            texts.append(section.text)
        cleaned = await self.guard.check_async(
            texts, tenant_id=caller.tenant_id, user_hash=caller.user_hash, correlation_id=caller.correlation_id
        )
        redactions = sum(c.count(REDACTION_MARK) - t.count(REDACTION_MARK) for c, t in zip(cleaned, texts, strict=True))
        if cleaned is texts or not redactions:
            return parsed, title, metadata, 0
        doc_title, title, rest = cleaned[0], cleaned[1], cleaned[2:]
        metadata = dict(zip(keys, rest[: len(keys)], strict=True))
        rest = rest[len(keys) :]
        sections = []
        for section, count in zip(parsed.sections, heading_count, strict=True):
            headings, text, rest = tuple(rest[:count]), rest[count], rest[count + 1 :]
            sections.append(dataclasses.replace(section, heading_path=headings, text=text))
        return dataclasses.replace(parsed, title=doc_title, sections=tuple(sections)), title, metadata, redactions

    async def _write(
        self,
        collection: CollectionRow,
        row: DocumentRow,
        chunks: list[Chunk],
        texts: list[str],
        vectors: list[list[float]],
    ) -> DocumentRow:
        ids = [chunk_id(row.id, c.index) for c in chunks]
        metadatas = [
            {"document_id": row.id, "title": row.title, "heading": " > ".join(c.heading_path),
             "index": c.index, "source": row.source}
            for c in chunks
        ]  # fmt: skip
        async with self.keywords.lock(collection.id):
            # The row goes 'indexing' first: a replaced document disappears from queries until it is whole.
            await self.repository.begin_document(row)
            try:
                old = await self.chroma.document_chunk_ids(collection.chroma_name, row.id)
                await self.chroma.upsert(collection.chroma_name, ids, vectors, [c.text for c in chunks], metadatas)
                stale = sorted(set(old) - set(ids))
                await self.chroma.delete(collection.chroma_name, stale)
                await self.keywords.replace(
                    collection.id, collection.chroma_name, remove=old, add_ids=ids, add_texts=texts
                )
                return await self.repository.mark_ready(collection.id, row.id)
            except BaseException:
                log.warning("ingestion failed half way; removing the document", extra={"document_id": row.id})
                await asyncio.shield(self._purge_quietly(collection, row.id))
                raise

    async def _purge_quietly(self, collection: CollectionRow, document_id: str) -> None:
        try:
            await self._purge(collection, document_id)
        except Exception:
            # The row stays 'indexing' (never visible); the next start removes it and its chunks.
            log.exception("could not remove a half-indexed document", extra={"document_id": document_id})

    # Start-up housekeeping --------------------------------------------------------------------------

    async def recover(self) -> None:
        """Remove what a crash left: documents still 'indexing' (with their chunks), and Chroma
        collections whose Goblin collection is gone; load (or rebuild) every keyword index."""
        collections = await self.repository.all_collections()
        for collection in collections:
            for row in await self.repository.unfinished_documents(collection.id):
                log.warning("removing a half-indexed document", extra={"document_id": row.id})
                async with self.keywords.lock(collection.id):
                    await self._purge(collection, row.id)
            await self.keywords.index(collection.id, collection.chroma_name)
        known = {c.chroma_name for c in collections}
        for name in await self.chroma.collection_names():
            if name.startswith(CHROMA_PREFIX) and name not in known:
                log.warning("dropping an orphaned Chroma collection", extra={"chroma_collection": name})
                await self.chroma.drop(name)
