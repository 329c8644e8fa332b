"""The local provider is our own inference service, whose health we can ask: while its circuit is not
closed, ask ``grpc.health.v1`` every ``every_s``, and close the circuit as soon as it answers SERVING.

A remote provider's circuit waits out its cooldown and probes with a real call, since nothing else says
it is back. Inference restarting (a SIGKILL, a model reload) would otherwise keep local chats refused
for the rest of the cooldown (30 s by default) after it is ready again.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.background import BackgroundLoop
from services.common.topology import LOCAL_PROVIDER
from services.router.breaker import CircuitState
from services.router.provider_state import ProviderStates

log = logging.getLogger(__name__)


class LocalHealthWatch:
    def __init__(
        self, states: ProviderStates, channel: grpc.aio.Channel, *, every_s: float = 0.5, timeout_s: float = 1.0
    ) -> None:
        self.states = states
        self.timeout_s = timeout_s
        self._health = health_pb2_grpc.HealthStub(channel)
        self._loop = BackgroundLoop("local-health-watch", self._check, every_s=every_s, logger=log)

    async def _check(self) -> None:
        breaker = self.states.breaker(LOCAL_PROVIDER)
        if breaker.state is CircuitState.closed:
            return
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout_s)
        except grpc.aio.AioRpcError:
            return  # still away
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            log.info("inference answers SERVING: closing the local circuit before its cooldown ends")
            self.states.success_without_latency(LOCAL_PROVIDER)

    async def start(self) -> None:
        await self._loop.start()

    async def healthy(self) -> bool:
        return await self._loop.healthy()

    async def stop(self) -> None:
        await self._loop.stop()
