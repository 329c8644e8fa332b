"""Typed gRPC clients for every backend service, and their health checks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from goblin.v1 import (
    auth_pb2_grpc,
    executor_pb2_grpc,
    inference_pb2_grpc,
    rag_pb2_grpc,
    router_pb2_grpc,
)
from services.common.audit import AuditLog
from services.common.grpc_client import open_channel
from services.common.stores import PostgresStore, RedisStore, start_with_backoff
from services.gateway.config import GatewaySettings
from services.gateway.metrics import SERVICE_HEALTH

SERVICES = ("router", "inference", "rag", "auth", "executor")


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    address: str
    status: str  # SERVING | NOT_SERVING | UNKNOWN | SERVICE_UNKNOWN | UNREACHABLE
    latency_ms: float
    error: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v != "" and k != "name"}


class Backends:
    """One channel per service, opened once and shared by every request."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = {name: addresses[name] for name in SERVICES}
        self.channels = {name: open_channel(addr) for name, addr in self.addresses.items()}
        self.router = router_pb2_grpc.RouterStub(self.channels["router"])
        self.inference = inference_pb2_grpc.InferenceStub(self.channels["inference"])
        self.rag = rag_pb2_grpc.RagStub(self.channels["rag"])
        self.auth = auth_pb2_grpc.AuthStub(self.channels["auth"])
        self.executor = executor_pb2_grpc.ExecutorStub(self.channels["executor"])
        self._health = {name: health_pb2_grpc.HealthStub(ch) for name, ch in self.channels.items()}

    async def check(self, name: str, timeout_s: float) -> ServiceHealth:
        started = time.perf_counter()
        try:
            reply = await self._health[name].Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            error = ""
        except grpc.aio.AioRpcError as exc:
            status = "UNREACHABLE"
            error = f"{exc.code().name}: {exc.details() or ''}".strip(": ")
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        SERVICE_HEALTH.labels(name).set(1 if status == "SERVING" else 0)
        return ServiceHealth(name, self.addresses[name], status, latency_ms, error)

    async def check_all(self, timeout_s: float) -> list[ServiceHealth]:
        return list(await asyncio.gather(*(self.check(name, timeout_s) for name in SERVICES)))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()))


class GatewayStores:
    """The gateway's own dependencies: Postgres for the audit trail, Redis (also used by the limiter).

    They connect in the background with retries, so the gateway serves health while they come up;
    readiness reports them. Audit rows queue (bounded) until Postgres answers.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), max_size=4, run_migrations=False)
        self.redis = RedisStore(settings.redis_url.get_secret_value())
        self.audit = AuditLog(self.postgres)
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="gateway-stores")

    async def _connect(self) -> None:
        for name, store in (("gateway postgres", self.postgres), ("gateway redis", self.redis)):
            await start_with_backoff(store.start, name, max_delay_s=5.0)
        await self.audit.start()

    async def check(self) -> list[ServiceHealth]:
        results = []
        for name, store in (("postgres", self.postgres), ("redis", self.redis)):
            started = time.perf_counter()
            try:
                ok, error = await asyncio.wait_for(store.healthy(), timeout=1.0), ""
            except Exception as exc:
                ok, error = False, type(exc).__name__
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            SERVICE_HEALTH.labels(name).set(1 if ok else 0)
            results.append(ServiceHealth(name, "gateway", "SERVING" if ok else "NOT_SERVING", latency_ms, error))
        return results

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        await self.audit.stop()
        await self.redis.stop()
        await self.postgres.stop()
