"""The principal check alone, as a gRPC server interceptor: what the secure skeleton (bench/skeleton.py)
registers, and bench/router_micro.py's "before" row (two interceptors, each rebuilding the handler per
call). Goblin's servers check principals inside services.common.grpc_server's one interceptor, through the
same ``PrincipalGate``; this module keeps the check apart from the correlation id and call metrics that
interceptor also carries, so the secure skeleton has the security and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.principal import InvalidPrincipal, Principal, PrincipalGate, verified_principal_var


class PrincipalInterceptor(grpc.aio.ServerInterceptor):
    """The principal check alone, as the servers did it before services.common.grpc_server's one
    interceptor took it in (its gate, refusal and context are the same ``PrincipalGate``): checks a call's
    principal before the servicer runs (refusing it with UNAUTHENTICATED) and makes the verified one
    ``current_principal`` while it runs. Without the correlation id and call metrics that the servers'
    interceptor also carries, so the secure skeleton has the security and nothing else."""

    def __init__(self, gate: PrincipalGate) -> None:
        self.gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        try:
            principal = self.gate.check(method, handler_call_details.invocation_metadata)
        except InvalidPrincipal as exc:
            return _refusal(handler, str(exc))
        return _with_principal(handler, principal)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises; the yield makes this an async generator

    return _rebuild(handler, refuse, refuse_stream)


def _with_principal(handler: grpc.RpcMethodHandler, principal: Principal | None) -> grpc.RpcMethodHandler:
    unary = handler.unary_unary or handler.stream_unary
    streaming = handler.unary_stream or handler.stream_stream

    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = verified_principal_var.set(principal)
        try:
            return await unary(request, context)
        finally:
            verified_principal_var.reset(token)

    async def run_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = verified_principal_var.set(principal)
        try:
            async for item in streaming(request, context):
                yield item
        finally:
            verified_principal_var.reset(token)

    return _rebuild(handler, run, run_stream)


def _rebuild(handler: grpc.RpcMethodHandler, unary: Any, streaming: Any) -> grpc.RpcMethodHandler:
    args = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, *args)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, *args)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, *args)
    return grpc.stream_stream_rpc_method_handler(streaming, *args)
