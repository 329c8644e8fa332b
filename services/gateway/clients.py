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
from services.common.grpc_client import open_channel
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
            reply = await self._health[name].Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
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
