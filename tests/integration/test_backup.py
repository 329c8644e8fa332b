"""`goblin backup` / `goblin restore` against the embedded stores of a real running suite, whose inference
listens on a Unix socket (the single-VM layout of deploy/systemd/): data written into every store,
backed up while the suite runs, wiped, restored into the stopped suite, read back identical."""

from __future__ import annotations

import asyncio
import functools
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import chromadb
import numpy as np
import pytest
import redis
from chromadb.api.client import SharedSystemClient
from chromadb.config import Settings

from goblin_tools.embedded import EmbeddedPostgres
from goblin_tools.suite import GOBLIN, ROOT, Suite, start_suite
from services.rag.keyword import KeywordIndex

pytestmark = pytest.mark.timeout(600)

COLLECTION = "backup-test"


@functools.cache
def keyword_files() -> dict[str, bytes]:
    """The files of a real keyword index (tantivy, as the rag service writes one), by their path under
    the keyword root: segment files, meta.json and tantivy's lock files."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        KeywordIndex.build(root / "acme_docs", ["d:0", "d:1"], ["The acme handbook.", "Backups run nightly."])
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def goblin(suite: Suite, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOBLIN), *args], cwd=ROOT, env=suite.env, input=stdin, capture_output=True, text=True, timeout=240
    )


def superuser_url(home: Path) -> str:
    return f"postgresql://postgres:@/goblin?host={quote(str(home / 'pg'), safe='/')}"


async def database_rows(url: str) -> dict[str, list[str]]:
    """Every row of every table of every schema, as text, sorted: two equal results are equal data."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        rows = {}
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            rows[name] = [r[0] for r in await conn.fetch(f"SELECT t::text FROM {name} t ORDER BY 1")]
        return rows
    finally:
        await conn.close()


def chroma(home: Path) -> Any:
    SharedSystemClient.clear_system_cache()  # the restore rewrote the directory behind this process's back
    return chromadb.PersistentClient(path=str(home / "chroma"), settings=Settings(anonymized_telemetry=False))


def chroma_records(home: Path) -> dict[str, Any]:
    collection = chroma(home).get_collection(COLLECTION)
    got = collection.get(include=["embeddings", "documents", "metadatas"])
    order = np.argsort(got["ids"])
    return {
        "metadata": collection.metadata,
        "ids": [got["ids"][i] for i in order],
        "embeddings": np.asarray(got["embeddings"])[order],
        "documents": [got["documents"][i] for i in order],
        "metadatas": [got["metadatas"][i] for i in order],
    }


def redis_client(home: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(home / "redis" / "redis.sock"))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    base = tmp_path_factory.mktemp("backup")
    socket_path = base / "run" / "inference.sock"
    suite = start_suite(
        base / "home", GOBLIN_INFERENCE_UDS=str(socket_path), GOBLIN_INFERENCE_ADDR=f"unix:{socket_path}"
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def backed_up(running: Suite) -> dict[str, Any]:
    """Data in every store, then a backup taken while the suite runs, and what the stores held."""
    home = running.home
    asyncio.run(_insert_tenant(superuser_url(home)))
    created = goblin(
        running,
        "users",
        "create",
        "alice@example.com",
        "--tenant",
        "acme",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert created.returncode == 0, created.stderr
    key = goblin(running, "keys", "create", "--user", "alice@example.com", "--scope", "chat")
    assert key.returncode == 0, key.stderr
    with running.admin_client() as client:  # routing-ledger rows, through router -> inference (Unix socket)
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4},
        )
    assert reply.status_code == 200, reply.text
    store = redis_client(home)
    store.hset("goblin:test:hash", mapping={"a": "1", "b": b"\x00\xff"})
    store.set("goblin:test:ttl", "expires", ex=3600)
    store.rpush("goblin:test:list", "x", "y", "z")
    store.zadd("goblin:test:zset", {"m1": 1.5, "m2": 2.5})
    rng = np.random.default_rng(17)
    collection = chroma(home).get_or_create_collection(COLLECTION, metadata={"hnsw:space": "cosine", "tenant": "acme"})
    count = 1200  # past chroma's sync threshold (1000): part flushed to HNSW, part only in its log
    collection.add(
        ids=[f"doc-{i:05d}" for i in range(count)],
        embeddings=rng.random((count, 384), dtype=np.float32),
        documents=[f"chunk {i} of the acme handbook" for i in range(count)],
        metadatas=[{"document_id": f"d{i // 10}", "ordinal": i} for i in range(count)],
    )
    for name, data in keyword_files().items():
        path = home / "rag" / "keyword" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    before = asyncio.run(database_rows(superuser_url(home)))
    ours = {k: store.dump(k) for k in store.scan_iter("goblin:test:*")}
    target = home.parent / "backup"
    result = goblin(running, "backup", str(target))
    assert result.returncode == 0, result.stderr
    after = asyncio.run(database_rows(superuser_url(home)))
    store.close()
    return {
        "dir": target,
        "key": key.stdout.strip(),
        "before": before,
        "after": after,
        "redis": ours,
        "chroma": chroma_records(home),
        "output": result.stderr,
    }


async def _insert_tenant(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO auth.tenants (id, name, tokens_per_day) VALUES ('acme', 'Acme', 50000)")
    finally:
        await conn.close()


def test_inference_serves_the_router_on_a_unix_socket_for_the_goblin_group_only(running: Suite) -> None:
    socket_path = Path(running.env["GOBLIN_INFERENCE_UDS"])
    mode = socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    with running.admin_client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1
    # Mutual TLS stays on over the socket: a client without the suite's certificate is refused.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    tls = running.grpc_tls("router")
    with grpc.secure_channel(
        f"unix:{socket_path}", tls.channel_credentials(), options=[("grpc.ssl_target_name_override", "inference")]
    ) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_backup_while_running_records_every_store(running: Suite, backed_up: dict[str, Any]) -> None:
    import json

    manifest = json.loads((backed_up["dir"] / "manifest.json").read_text())
    assert stat.S_IMODE(backed_up["dir"].stat().st_mode) == 0o700
    assert manifest["postgres"]["pg_dump"].startswith("pg_dump (PostgreSQL) 16")
    assert manifest["chroma"]["collections"][COLLECTION] == 1200
    assert manifest["redis"]["keys"] >= 4
    assert manifest["keyword_index"]["files"] == len(keyword_files())
    assert {m["role"] for m in manifest["models"]} == {"chat", "embedding", "embedding_tokenizer"}
    assert all(len(m["sha256"]) == 64 for m in manifest["models"])
    assert set(manifest["files"]) >= {"postgres.dump", "redis.jsonl", "chroma/collections.json"}
    verified = goblin(running, "models", "verify", str(backed_up["dir"]))
    assert verified.returncode == 0 and verified.stderr.count("sha256 matches") == 3, verified.stderr
    again = goblin(running, "backup", str(backed_up["dir"]))
    assert again.returncode == 1 and "not an empty directory" in again.stderr
    refused = goblin(running, "restore", "--yes", str(backed_up["dir"]))
    assert refused.returncode == 1 and "the suite is running" in refused.stderr, refused.stderr


def test_restore_into_the_wiped_stopped_suite_reads_back_identical(running: Suite, backed_up: dict[str, Any]) -> None:
    home, source = running.home, backed_up["dir"]
    assert running.stop() == 0, running.log_tail()
    for store in ("pg", "redis", "chroma", "rag"):
        shutil.rmtree(home / store)

    # A damaged backup is refused before anything is touched.
    tampered = home.parent / "tampered"
    shutil.copytree(source, tampered)
    damaged = tampered / "chroma" / "collection-0000.jsonl"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 1
    damaged.write_bytes(bytes(data))
    refused = goblin(running, "restore", "--yes", str(tampered))
    assert refused.returncode == 1
    assert (
        "chroma/collection-0000.jsonl: sha256 mismatch" in refused.stderr and "nothing was restored" in refused.stderr
    )
    shutil.copyfile(source / "chroma" / "collection-0000.jsonl", damaged)
    (tampered / "keyword" / "planted").write_text("not from the backup")
    refused = goblin(running, "restore", "--yes", str(tampered))
    assert refused.returncode == 1 and "keyword/planted is in" in refused.stderr
    assert not any((home / store).exists() for store in ("pg", "redis", "chroma", "rag")), "a refused restore wrote"

    restored = goblin(running, "restore", "--yes", str(source))
    assert restored.returncode == 0, restored.stderr

    embedded = EmbeddedPostgres(home / "pg")
    try:
        rows = asyncio.run(database_rows(embedded.url("goblin")))
    finally:
        embedded.stop()
    before, after = backed_up["before"], backed_up["after"]
    stable = {table for table in before if before[table] == after.get(table)}
    for table in ('"auth"."users"', '"auth"."api_keys"', '"auth"."tenants"', '"router"."routing_requests"'):
        assert table in stable, f"{table} changed while the backup ran"
        assert before[table], f"{table} is empty: the test wrote nothing there"
    assert set(rows) == set(before)
    for table in stable:
        assert rows[table] == before[table], table

    store_dir = home / "redis"
    assert (store_dir / "dump.rdb").exists()
    chroma_after = chroma_records(home)
    expected = backed_up["chroma"]
    assert chroma_after["metadata"] == expected["metadata"]
    assert chroma_after["ids"] == expected["ids"]
    # Chroma stores float32 and its own add -> get already moves a component by up to one unit in the
    # last place (measured: 1200 vectors added as float32 come back from get() 1 ulp off); the restore
    # adds the backed-up vectors again, so that is the exactness there is.
    np.testing.assert_array_max_ulp(
        chroma_after["embeddings"].astype(np.float32), expected["embeddings"].astype(np.float32), maxulp=1
    )
    assert chroma_after["documents"] == expected["documents"]
    assert chroma_after["metadatas"] == expected["metadatas"]
    for name, data in keyword_files().items():
        assert (home / "rag" / "keyword" / name).read_bytes() == data
    restored_index = KeywordIndex.load(home / "rag" / "keyword" / "acme_docs")
    assert len(restored_index) == 2 and restored_index.search("nightly backups", 1)[0][0] == "d:1"

    # The suite starts on the restored stores and knows the restored accounts.
    restarted = start_suite(
        home, **{k: v for k, v in running.env.items() if k.startswith("GOBLIN_") and k != "GOBLIN_HOME"}
    )
    try:
        restarted.wait_ready()
        store = redis_client(home)
        try:
            assert {k: store.dump(k) for k in store.scan_iter("goblin:test:*")} == backed_up["redis"]
            assert 0 < store.ttl("goblin:test:ttl") <= 3600
        finally:
            store.close()
        with restarted.client(headers={"Authorization": f"Bearer {backed_up['key']}"}) as client:
            me = client.get("/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "alice@example.com" and me.json()["tenant_id"] == "acme"
    finally:
        assert restarted.stop() == 0
