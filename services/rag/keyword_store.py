"""One keyword index per collection, persisted under GOBLIN_HOME/rag/keyword/<collection id>/.

Chroma holds the same chunk texts, so a missing or corrupt index is rebuilt from it. Writes to one
collection's index are serialised (:meth:`KeywordStore.lock`); a write builds a changed copy, saves it
in a worker thread and only then swaps it in, so searches never wait for a rebuild and never see one
half done.
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

    def path(self, collection_id: str) -> Path:
        """Where a collection's index lives (collection ids are generated, never user text)."""
        if not _SAFE_ID.match(collection_id):
            raise ValueError(f"not a collection id: {collection_id!r}")
        return self.root / collection_id

    def lock(self, collection_id: str) -> asyncio.Lock:
        """The lock every write to this collection's vectors and keywords holds."""
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def index(self, collection_id: str, chroma_name: str) -> KeywordIndex:
        """The collection's index: in memory, else from disk, else rebuilt from Chroma and saved."""
        index = self._indexes.get(collection_id)
        if index is not None:
            return index
        path = self.path(collection_id)
        try:
            index = await asyncio.to_thread(KeywordIndex.load, path)
        except KeywordIndexCorrupt as exc:
            if path.exists():
                log.warning("keyword index unreadable; rebuilding it from Chroma", extra={"reason": str(exc)})
            chunks = await self.chroma.all_chunks(chroma_name)
            index = KeywordIndex()
            index.add(
                [c.id for c in chunks],
                [
                    search_text(c.text, str(c.metadata.get("title", "")), str(c.metadata.get("heading", "")))
                    for c in chunks
                ],
            )
            await asyncio.to_thread(index.save, path)
        # Another task may have loaded it meanwhile; keep the first, which writes go through.
        return self._indexes.setdefault(collection_id, index)

    async def replace(
        self,
        collection_id: str,
        chroma_name: str,
        *,
        remove: list[str] | None = None,
        add_ids: list[str] | None = None,
        add_texts: list[str] | None = None,
    ) -> None:
        """Remove then add chunks, saved before it is visible. The caller holds :meth:`lock`."""
        current = await self.index(collection_id, chroma_name)
        changed = current.copy()
        if remove:
            changed.remove(remove)
        if add_ids:
            changed.add(add_ids, add_texts or [])
        await asyncio.to_thread(changed.save, self.path(collection_id))
        self._indexes[collection_id] = changed

    async def search(self, collection_id: str, chroma_name: str, query: str, k: int) -> list[tuple[str, float]]:
        """The collection's best keyword matches."""
        index = await self.index(collection_id, chroma_name)
        return index.search(query, k)

    async def drop(self, collection_id: str) -> None:
        """Forget the collection's index and delete its files."""
        self._indexes.pop(collection_id, None)
        await asyncio.to_thread(shutil.rmtree, self.path(collection_id), True)
