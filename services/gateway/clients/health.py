"""The health of every backend service, through the standard ``grpc.health.v1`` check over the
channel the gateway already holds to each."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.metrics import SERVICE_HEALTH


@dataclass(frozen=True)
class ServiceHealth:
    """One dependency's answer to a health check, and how long it took."""

    name: str
    address: str
    status: str  # SERVING | NOT_SERVING | UNKNOWN | SERVICE_UNKNOWN | UNREACHABLE
    latency_ms: float
    error: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def as_dict(self) -> dict[str, object]:
        """The detail ``/health/all`` shows (the name is the key it is shown under)."""
        return {k: v for k, v in asdict(self).items() if v != "" and k != "name"}


def record_health(name: str, serving: bool) -> None:
    """``service_health_status{service_name}``: 1 when the last check answered SERVING."""
    SERVICE_HEALTH.labels(name).set(1 if serving else 0)


class HealthClient:
    """``grpc.health.v1.Health/Check`` of each backend (the whole server: service name ``""``).

    A failed check is an answer here (``UNREACHABLE`` with the gRPC status), not an error: readiness
    reports every service, down ones included.
    """

    def __init__(self, addresses: dict[str, str], channels: dict[str, grpc.aio.Channel]) -> None:
        self.addresses = addresses
        self._stubs = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}

    async def check(self, name: str, timeout_s: float) -> ServiceHealth:
        """One service's health, within ``timeout_s``."""
        started = time.perf_counter()
        try:
            reply = await self._stubs[name].Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            error = ""
        except grpc.aio.AioRpcError as exc:
            status = "UNREACHABLE"
            error = f"{exc.code().name}: {exc.details() or ''}".strip(": ")
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        record_health(name, status == "SERVING")
        return ServiceHealth(name, self.addresses[name], status, latency_ms, error)

    async def check_all(self, timeout_s: float) -> list[ServiceHealth]:
        """Every backend's health, checked concurrently, in the suite's service order."""
        return list(await asyncio.gather(*(self.check(name, timeout_s) for name in self._stubs)))
