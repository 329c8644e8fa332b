"""``goblin backup DIR`` and ``goblin restore DIR``.

A backup is a directory: ``postgres.dump``, ``redis.jsonl``, ``chroma/`` (a snapshot through Chroma's
API), ``keyword/`` (the BM25 index) and ``manifest.json``, which records the versions of everything
involved, the sha256 and size of every file, and the model files by checksum (models are not copied;
``goblin models verify DIR`` checks them). How each store is read consistently while the suite runs
is described in goblin_tools.backup_stores.

Restore goes into a stopped suite: it first checks the whole backup against its manifest (a missing,
extra, altered or symlinked file refuses the restore before anything is touched), then checks that
nothing of the suite is running (the locks of ``goblin up`` and of the services under GOBLIN_HOME,
the embedded Redis), then replaces each store's content with the backup's.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from goblin_tools import backup_stores as stores
from goblin_tools.backup_stores import BackupError
from goblin_tools.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStoreError
from goblin_tools.models import model_manifest, sha256_file, verify_models
from services.common.tls import private_dir

MANIFEST = "manifest.json"
FORMAT = 1
REQUIRED = (stores.PG_DUMP_FILE, stores.REDIS_FILE, f"{stores.CHROMA_DIR}/{stores.CHROMA_COLLECTIONS_FILE}")


@dataclass(frozen=True)
class Locations:
    """Where the suite keeps its state: external stores by URL, else the embedded ones in ``home``."""

    home: Path
    database_url: str | None = None
    redis_url: str | None = None
    chroma_url: str | None = None

    @property
    def chroma_path(self) -> Path:
        return Path(os.environ.get("GOBLIN_CHROMA_PATH") or self.home / "chroma")

    @property
    def keyword_path(self) -> Path:
        return Path(os.environ.get("GOBLIN_RAG_KEYWORD_PATH") or self.home / "rag" / "keyword")

    @classmethod
    def from_settings(cls, settings: Any) -> Locations:
        """From ``goblin up``'s settings (goblin_tools.supervisor.SuiteSettings)."""
        return cls(settings.goblin_home, settings.database_url, settings.redis_url, settings.chroma_url)


# -- the stores, external or embedded ----------------------------------------------------------------
@contextmanager
def _postgres(locations: Locations) -> Iterator[tuple[str, bool]]:
    """(an administrator's URL of Goblin's database, whether it is the embedded one)."""
    if locations.database_url:
        yield locations.database_url, False
        return
    try:
        embedded = EmbeddedPostgres(locations.home / "pg")
    except EmbeddedStoreError as exc:
        raise BackupError(str(exc)) from None
    try:
        yield embedded.create_database("goblin"), True
    finally:
        embedded.stop()  # stops the server only if no one else (a running suite) holds it


def _embedded_redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


@contextmanager
def _redis(locations: Locations) -> Iterator[redis.Redis]:
    if locations.redis_url:
        client = redis.Redis.from_url(locations.redis_url)
        try:
            yield client
        finally:
            client.close()
        return
    data_dir = locations.home / "redis"
    if _embedded_redis_answers(data_dir / "redis.sock"):  # the running suite's: read it live
        client = redis.Redis(unix_socket_path=str(data_dir / "redis.sock"))
        try:
            yield client
        finally:
            client.close()
        return
    server = EmbeddedRedis(data_dir)  # loads its dump.rdb; ours only for this command
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    try:
        yield client
        client.save()  # what a restore wrote is on disk before the server stops
    finally:
        client.close()
        server.stop()


def _suite_running(locations: Locations) -> str | None:
    """What of the suite is running on this machine, or None: a lock under GOBLIN_HOME someone holds
    (``goblin up``'s, a service's single-instance lock), or the embedded Redis answering."""
    home = locations.home
    candidates = [home / "goblin.lock", *sorted((home / "locks").glob("*.lock"))]
    for path in candidates:
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            return f"{path.name} is held by pid {holder}"
        finally:
            os.close(fd)
    if not locations.redis_url and _embedded_redis_answers(home / "redis" / "redis.sock"):
        return "the embedded Redis answers"
    return None


# -- backup ----------------------------------------------------------------------------------------
def _goblin_version() -> str:
    try:
        return metadata.version("goblin")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _schema_versions(database_url: str) -> dict[str, int]:
    from services.common import db

    return {name: await db.schema_version(database_url, schema) for name, schema in db.SETS.items()}


def _hash_files(directory: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST:
            path.chmod(0o600)  # the directory is 0700; a copy of a single file stays private too
            files[relative] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def backup(target: Path, locations: Locations) -> dict[str, Any]:
    """Back everything up into ``target`` (new or empty; made 0700: it holds password hashes and keys).
    Returns the manifest."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory: back up into a new one")
    private_dir(target)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "goblin_version": _goblin_version(),
    }
    with _postgres(locations) as (url, embedded):
        stores.dump_postgres(url, target / stores.PG_DUMP_FILE)
        manifest["postgres"] = {
            "embedded": embedded,
            "pg_dump": stores.pg_version(stores.pg_binary("pg_dump")),
            "schema_versions": asyncio.run(_schema_versions(url)),
        }
    with _redis(locations) as client:
        keys = stores.dump_redis(client, target / stores.REDIS_FILE)
        manifest["redis"] = {"server": client.info("server").get("redis_version"), "keys": keys}
    import chromadb

    collections = stores.dump_chroma(
        stores.chroma_client(locations.chroma_url, locations.chroma_path), target / stores.CHROMA_DIR
    )
    manifest["chroma"] = {"chromadb": chromadb.__version__, "collections": collections}
    manifest["keyword_index"] = {
        "files": stores.copy_keyword_index(locations.keyword_path, target / stores.KEYWORD_DIR)
    }
    try:
        manifest["models"] = model_manifest()
    except FileNotFoundError as exc:  # no local model installed: nothing to record
        manifest["models"] = []
        manifest["models_note"] = str(exc)
    manifest["files"] = _hash_files(target)
    path = target / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    path.chmod(0o600)
    return manifest


# -- restore ---------------------------------------------------------------------------------------
def verify_backup(source: Path) -> dict[str, Any]:
    """The manifest, once every file of ``source`` is exactly the one it lists; BackupError otherwise."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST}: not a Goblin backup (or an unfinished one)") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST} is unreadable: {exc}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise BackupError(f"{source / MANIFEST}: not a backup of format {FORMAT}")
    links = [p for p in source.rglob("*") if p.is_symlink()]
    if links:
        raise BackupError(f"{links[0]} is a symbolic link: a backup holds plain files only; nothing was restored")
    listed: dict[str, Any] = manifest["files"]
    present = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()} - {MANIFEST}
    for name in REQUIRED:
        if name not in listed:
            raise BackupError(f"{MANIFEST} lists no {name}; nothing was restored")
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise BackupError(f"{missing[0]} is missing from {source}; nothing was restored")
    if extra:
        raise BackupError(f"{extra[0]} is in {source} but not in its manifest; nothing was restored")
    for name, expected in listed.items():
        path = source / name
        if path.stat().st_size != expected.get("size") or sha256_file(path) != expected.get("sha256"):
            raise BackupError(
                f"{name}: sha256 mismatch with {MANIFEST} (the backup is damaged or was altered); nothing was restored"
            )
    return manifest


async def _hand_back_schemas(database_url: str, embedded: bool) -> str:
    """Ownership to the service roles again (pg_restore ran with --no-owner) and pending migrations."""
    import asyncpg

    from services.common import db

    if not embedded:
        conn = await db.connect(database_url)
        try:
            roles = await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(db.SERVICE_ROLES.values())
            )
        finally:
            await conn.close()
        if roles != len(db.SERVICE_ROLES):
            await db.migrate_all(database_url)
            return "migrated; no service roles in this cluster (run `goblin db roles` if you use them)"
    try:
        await db.provision_roles(database_url)
    except asyncpg.PostgresError as exc:
        return f"restored, but the schemas could not be handed to the service roles ({exc}): run `goblin db roles`"
    return "migrated; schemas handed to the service roles"


def restore(source: Path, locations: Locations) -> dict[str, Any]:
    """Replace the stopped suite's state with the backup in ``source``; returns what was restored."""
    manifest = verify_backup(source)
    running = _suite_running(locations)
    if running:
        raise BackupError(f"the suite is running ({running}): stop it (goblin.target, or goblin up) first")
    summary: dict[str, Any] = {}
    with _postgres(locations) as (url, embedded):
        stores.restore_postgres(url, source / stores.PG_DUMP_FILE)
        summary["postgres"] = asyncio.run(_hand_back_schemas(url, embedded))
    with _redis(locations) as client:
        summary["redis_keys"] = stores.restore_redis(client, source / stores.REDIS_FILE)
    client = stores.chroma_client(locations.chroma_url, locations.chroma_path)
    summary["chroma"] = stores.restore_chroma(client, source / stores.CHROMA_DIR)
    summary["keyword_files"] = stores.restore_keyword_index(source / stores.KEYWORD_DIR, locations.keyword_path)
    summary["models"] = verify_models(manifest.get("models") or [])
    return summary
