"""ChromaDB: a server at CHROMA_URL, or an embedded PersistentClient on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from services.common.errors import Unavailable


class ChromaStore:
    def __init__(self, url: str | None, path: Path) -> None:
        self.url = url
        self.path = path
        self._client: Any = None

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
