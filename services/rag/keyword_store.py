"""One keyword index per collection, persisted under GOBLIN_HOME/rag/keyword/<collection id>/.

Chroma holds the same chunk texts and is the source of truth: an index that is missing, unreadable,
of the bm25s format from before tantivy (a migration: rebuilt once, then tantivy's) or that does not
hold as many chunks as Chroma (a crash between the two writes, or a backup that copied the index at
another moment than Chroma) is rebuilt from it when first opened (at start, by recovery). Writes to
one collection's index are serialised (:meth:`KeywordStore.lock`) and each is one tantivy commit in a
worker thread; searches read the last commit, never one half done.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

from services.rag.chroma import ChromaStore
from services.rag.keyword import KeywordIndex, KeywordIndexCorrupt
from services.rag.naming import search_text

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class KeywordStore:
    """The keyword indexes of every collection this process has touched."""

    def __init__(self, root: Path, chroma: ChromaStore) -> None:
        self.root = root
        self.chroma = chroma
        self._indexes: dict[str, KeywordIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Opening is serialised apart from writes (a write opens the index under the write lock): two
        # tasks rebuilding one directory would rename it under each other's open index.
        self._opening: dict[str, asyncio.Lock] = {}

    def path(self, collection_id: str) -> Path:
        """Where a collection's index lives (collection ids are generated, never user text)."""
        if not _SAFE_ID.match(collection_id):
            raise ValueError(f"not a collection id: {collection_id!r}")
        return self.root / collection_id

    def lock(self, collection_id: str) -> asyncio.Lock:
        """The lock every write to this collection's vectors and keywords holds."""
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def index(self, collection_id: str, chroma_name: str) -> KeywordIndex:
        """The collection's index: in memory, else from disk, else rebuilt from Chroma."""
        index = self._indexes.get(collection_id)
        if index is not None:
            return index
        async with self._opening.setdefault(collection_id, asyncio.Lock()):
            index = self._indexes.get(collection_id)
            if index is None:
                index = self._indexes[collection_id] = await self._open(collection_id, chroma_name)
            return index

    async def _open(self, collection_id: str, chroma_name: str) -> KeywordIndex:
        index: KeywordIndex | None = None
        path = self.path(collection_id)
        reason = ""
        try:
            index = await asyncio.to_thread(KeywordIndex.load, path)
        except KeywordIndexCorrupt as exc:
            reason = str(exc) if path.exists() else ""
        else:
            held = await self.chroma.count(chroma_name)
            if len(index) != held:
                reason = f"{path}: {len(index)} chunks, Chroma holds {held}"
        if index is None or reason:
            if reason:
                log.warning("keyword index rebuilt from Chroma", extra={"reason": reason})
            chunks = await self.chroma.all_chunks(chroma_name)
            ids = [c.id for c in chunks]
            texts = [
                search_text(c.text, str(c.metadata.get("title", "")), str(c.metadata.get("heading", "")))
                for c in chunks
            ]
            index = await asyncio.to_thread(KeywordIndex.build, path, ids, texts)
        return index

    async def replace(
        self,
        collection_id: str,
        chroma_name: str,
        *,
        remove: list[str] | None = None,
        add_ids: list[str] | None = None,
        add_texts: list[str] | None = None,
    ) -> None:
        """Remove then add chunks in one commit, on disk before it is visible. The caller holds :meth:`lock`."""
        index = await self.index(collection_id, chroma_name)
        await asyncio.to_thread(index.update, remove=remove or [], add_ids=add_ids, add_texts=add_texts)

    async def search(self, collection_id: str, chroma_name: str, query: str, k: int) -> list[tuple[str, float]]:
        """The collection's best keyword matches."""
        index = await self.index(collection_id, chroma_name)
        return index.search(query, k)

    async def drop(self, collection_id: str) -> None:
        """Forget the collection's index and delete its files."""
        self._indexes.pop(collection_id, None)
        await asyncio.to_thread(shutil.rmtree, self.path(collection_id), True)
