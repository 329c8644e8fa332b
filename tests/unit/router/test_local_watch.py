"""The local circuit closes as soon as inference's own health says SERVING, not after the cooldown."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.topology import LOCAL_PROVIDER
from services.router.breaker import CircuitState
from services.router.local_watch import LocalHealthWatch
from services.router.provider_state import ProviderStates


async def test_the_local_circuit_closes_when_inference_serves_again() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    states = ProviderStates(failure_threshold=1, cooldown_s=3600)
    states.failure(LOCAL_PROVIDER)  # inference went away: the circuit opens for an hour
    states.failure("acme")  # a remote provider's circuit is not ours to close
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = LocalHealthWatch(states, channel, every_s=0.05)
        await watch.start()
        try:
            await asyncio.sleep(0.3)
            assert states.breaker(LOCAL_PROVIDER).state is CircuitState.open  # NOT_SERVING: still open
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            for _ in range(100):
                if states.breaker(LOCAL_PROVIDER).state is CircuitState.closed:
                    break
                await asyncio.sleep(0.02)
            assert states.breaker(LOCAL_PROVIDER).state is CircuitState.closed
            assert states.breaker("acme").state is CircuitState.open
            assert await watch.healthy()
        finally:
            await watch.stop()
    await server.stop(None)
