"""Typed clients of the backend services the gateway calls, over one channel per service.

Routes and dependencies use these, never gRPC stubs: each client maps its service's failures to the
gateway's HTTP error model (``services.gateway.errors``) in one place (:mod:`.base`).
"""

from __future__ import annotations

import asyncio

from services.common.grpc_client import open_channel
from services.common.tls import GrpcTls
from services.common.topology import BACKEND_SERVICES
from services.gateway.clients.auth import AuthClient
from services.gateway.clients.executor import ExecutorClient, TaskEventStream
from services.gateway.clients.health import HealthClient, ServiceHealth
from services.gateway.clients.rag import RagClient
from services.gateway.clients.router import ChatStream, Embeddings, ModelInfo, RouterClient

__all__ = [
    "AuthClient",
    "ChatStream",
    "Embeddings",
    "ExecutorClient",
    "GatewayClients",
    "HealthClient",
    "ModelInfo",
    "RagClient",
    "RouterClient",
    "ServiceHealth",
    "TaskEventStream",
]


class GatewayClients:
    """One channel per backend service, opened once and shared by every request; the gateway calls
    the router, auth and executor services, and checks the health of all of them."""

    def __init__(self, addresses: dict[str, str], tls: GrpcTls) -> None:
        self.addresses = {name: addresses[name] for name in BACKEND_SERVICES}
        # No interceptors: each call passes its own metadata (identity.py), cheaper than grpc.aio's
        # intercepted call.
        self._channels = {
            name: open_channel(address, name, tls, intercept=False) for name, address in self.addresses.items()
        }
        self.router = RouterClient(self._channels["router"])
        self.auth = AuthClient(self._channels["auth"])
        self.rag = RagClient(self._channels["rag"])
        self.executor = ExecutorClient(self._channels["executor"])
        self.health = HealthClient(self.addresses, self._channels)

    async def close(self) -> None:
        """Close every channel (calls in flight are cancelled)."""
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
