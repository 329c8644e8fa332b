"""What every typed backend client shares: its service's channel, and the one place where that
service's failed calls become the gateway's HTTP error (:class:`~services.gateway.errors.ApiError`).

Routes and dependencies call client methods and see ``ApiError`` only, never ``grpc.aio.AioRpcError``.
The channels have no interceptors: each call passes its metadata itself (clients/identity.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.gateway.clients.identity import metadata
from services.gateway.errors import ApiError, api_error_from_grpc

ResponseT = TypeVar("ResponseT")


class ServiceClient:
    """One backend service's channel (opened and closed by :class:`GatewayClients`, which shares it
    with the health checks) and its error translation."""

    def __init__(self, service: str, channel: grpc.aio.Channel) -> None:
        self.service = service
        self.channel = channel

    def error(self, exc: grpc.aio.AioRpcError) -> ApiError:
        """The HTTP answer for one of this service's failed calls (named after the service when it is down)."""
        return api_error_from_grpc(exc, service=self.service)

    async def call(
        self, rpc: Callable[..., Awaitable[ResponseT]], request: Any, deadline_s: float | None = None
    ) -> ResponseT:
        """One unary RPC, with a gRPC deadline ``deadline_s`` from now (none: no deadline), carrying the
        correlation id and who is asking (:func:`~services.gateway.clients.identity.metadata`); its
        failure raised as :class:`ApiError`."""
        try:
            return await rpc(request, timeout=deadline_s, metadata=metadata())
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc) from None
