"""Each store's half of ``goblin backup`` / ``goblin restore`` (goblin_tools.backup runs them in order).

- PostgreSQL: ``pg_dump --format=custom``, one transaction, so consistent while the suite writes.
  The binaries of the ``pgserver`` wheel (PostgreSQL 16) are used when installed: they dump a 16 server
  and older ones alike, where a distribution's pg_dump 15 refuses a 16 server.
- Redis: every key of Goblin's database as ``DUMP`` + remaining TTL, restored with ``RESTORE``. It
  works against any Redis (no file access to the server, no CONFIG, which managed Redis often
  forbids); each key is read atomically, the set of keys is not one instant (rate-limit windows and
  caches are all Goblin keeps there, and they are valid whichever instant each is from).
- Chroma: a snapshot through Chroma's own API (every collection's metadata, configuration, ids,
  embeddings, documents and metadatas, read in pages), not a copy of its directory, whose HNSW files
  lag the write-ahead log and may be half-written while the rag service runs. It restores into an
  embedded directory or a Chroma server alike. Vectors come back within one float32 ulp: Chroma's own
  add -> get moves a component by that much, so no API round trip is bit-exact.
- The keyword (BM25) index: files copied through directory descriptors (``os.fwalk``). Each collection's
  index is a tantivy directory that the rag service changes in place (new segment files, then
  ``meta.json``; merged-away segments deleted), so a copy taken during a change can miss a file or
  list one that is gone by the time it is opened (skipped). That costs nothing: Chroma is the source
  of truth, and the rag service rebuilds from it at start any index that does not open or does not
  hold Chroma's chunk count (services.rag.keyword_store).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

PG_DUMP_FILE = "postgres.dump"
REDIS_FILE = "redis.jsonl"
CHROMA_DIR = "chroma"
CHROMA_COLLECTIONS_FILE = "collections.json"
KEYWORD_DIR = "keyword"
CHROMA_PAGE = 1000
REDIS_SCAN_COUNT = 1000


class BackupError(RuntimeError):
    """A backup or restore step failed; ``str()`` is the one line shown to the operator."""


# -- PostgreSQL ------------------------------------------------------------------------------------
def pg_binary(name: str) -> str:
    """``pg_dump`` / ``pg_restore``: the pgserver wheel's (PostgreSQL 16) when installed, else PATH's."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        POSTGRES_BIN_PATH = None  # noqa: N806
    if POSTGRES_BIN_PATH is not None and (POSTGRES_BIN_PATH / name).is_file():
        return str(POSTGRES_BIN_PATH / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools, or pgserver")
    return found


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise BackupError(f"{what} failed: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return result.stdout


def pg_version(binary: str) -> str:
    return _run([binary, "--version"], binary).strip()


def dump_postgres(database_url: str, target: Path) -> None:
    """The whole database, custom format (compressed, restorable selectively, one snapshot)."""
    _run([pg_binary("pg_dump"), "--format=custom", f"--file={target}", f"--dbname={database_url}"], "pg_dump")


def restore_postgres(database_url: str, source: Path) -> None:
    """Restore into ``database_url``, dropping what the dump holds first. Ownership and grants are not
    restored (the roles may not exist in this cluster); the caller hands the schemas back to the
    service roles (services.common.db.provision_roles)."""
    _run(
        [
            pg_binary("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={database_url}",
            str(source),
        ],
        "pg_restore",
    )


# -- Redis -----------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dump_redis(client: redis.Redis, target: Path) -> int:
    """Every key of the client's database as one JSON line (key, remaining TTL in ms, DUMP payload)."""
    count = 0
    with target.open("w", encoding="utf-8") as out:
        for key in client.scan_iter(count=REDIS_SCAN_COUNT):
            with client.pipeline(transaction=True) as pipe:
                pipe.dump(key)
                pipe.pttl(key)
                payload, ttl = pipe.execute()
            if payload is None:  # expired or deleted between SCAN and DUMP
                continue
            out.write(json.dumps({"key": _b64(key), "ttl_ms": max(int(ttl), 0), "dump": _b64(payload)}) + "\n")
            count += 1
    return count


def restore_redis(client: redis.Redis, source: Path) -> int:
    """Empty the database, then ``RESTORE`` every key with the TTL it had at backup time."""
    client.flushdb()
    count = 0
    with source.open(encoding="utf-8") as lines, client.pipeline(transaction=False) as pipe:
        for line in lines:
            entry = json.loads(line)
            pipe.restore(base64.b64decode(entry["key"]), entry["ttl_ms"], base64.b64decode(entry["dump"]), replace=True)
            count += 1
            if count % REDIS_SCAN_COUNT == 0:
                pipe.execute()
        pipe.execute()
    return count


# -- Chroma ----------------------------------------------------------------------------------------
def chroma_client(url: str | None, path: Path) -> Any:
    """A Chroma client: the server at ``url``, else the embedded PersistentClient in ``path``; no
    telemetry (Goblin never lets Chroma reach the internet), as in services/rag."""
    from urllib.parse import urlparse

    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if url:
        parsed = urlparse(url)
        return chromadb.HttpClient(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=settings,
        )
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def _pages(collection: Any) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        page = collection.get(include=["embeddings", "documents", "metadatas"], limit=CHROMA_PAGE, offset=offset)
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


def dump_chroma(client: Any, target: Path) -> dict[str, int]:
    """Every collection: ``collections.json`` (names, metadata, configuration) and one JSON-lines file of
    records per collection. Returns the record count of each."""
    target.mkdir(parents=True, exist_ok=True)
    described, counts = [], {}
    for index, collection in enumerate(client.list_collections()):
        file_name = f"collection-{index:04d}.jsonl"
        count = 0
        with (target / file_name).open("w", encoding="utf-8") as out:
            for page in _pages(collection):
                embeddings = page["embeddings"]
                for i, record_id in enumerate(page["ids"]):
                    vector = None if embeddings is None else [float(x) for x in embeddings[i]]
                    record = {
                        "id": record_id,
                        "embedding": vector,
                        "document": page["documents"][i] if page["documents"] is not None else None,
                        "metadata": page["metadatas"][i] if page["metadatas"] is not None else None,
                    }
                    out.write(json.dumps(record) + "\n")
                    count += 1
        described.append(
            {
                "name": collection.name,
                "metadata": collection.metadata,
                "configuration": _configuration(collection),
                "file": file_name,
                "count": count,
            }
        )
        counts[collection.name] = count
    (target / CHROMA_COLLECTIONS_FILE).write_text(json.dumps(described, indent=2))
    return counts


def _configuration(collection: Any) -> dict[str, Any] | None:
    config = getattr(collection, "configuration_json", None)
    return config if isinstance(config, dict) else None


def restore_chroma(client: Any, source: Path) -> dict[str, int]:
    """Delete every collection, then recreate each of the snapshot with its records."""
    for collection in client.list_collections():
        client.delete_collection(collection.name)
    counts = {}
    for described in json.loads((source / CHROMA_COLLECTIONS_FILE).read_text()):
        hnsw = (described.get("configuration") or {}).get("hnsw")
        collection = client.create_collection(
            described["name"],
            metadata=described["metadata"],
            configuration={"hnsw": hnsw} if hnsw else None,
            embedding_function=None,  # the vectors are restored as they were; nothing is re-embedded
        )
        batch: list[dict[str, Any]] = []
        with (source / described["file"]).open(encoding="utf-8") as lines:
            for line in lines:
                batch.append(json.loads(line))
                if len(batch) == CHROMA_PAGE:
                    _add(collection, batch)
                    batch = []
        _add(collection, batch)
        counts[described["name"]] = collection.count()
    return counts


def _add(collection: Any, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    collection.add(
        ids=[r["id"] for r in records],
        embeddings=[r["embedding"] for r in records],
        documents=[r["document"] for r in records],
        metadatas=[r["metadata"] or None for r in records],
    )


# -- keyword index ---------------------------------------------------------------------------------
def copy_keyword_index(source: Path, target: Path) -> int:
    """Copy the index tree file by file through directory descriptors; returns the number of files."""
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return 0
    copied = 0
    for dirpath, _dirnames, filenames, dirfd in os.fwalk(source):
        relative = Path(dirpath).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
            except FileNotFoundError:
                continue  # a segment merged away since the listing: see the module's docstring
            with os.fdopen(fd, "rb") as src, (target / relative / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
            copied += 1
    return copied


def restore_keyword_index(source: Path, target: Path) -> int:
    """Replace the index tree with the backup's (the rag service reloads it at start)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        target.mkdir()
        return 0
    shutil.copytree(source, target)
    return sum(1 for p in target.rglob("*") if p.is_file())
