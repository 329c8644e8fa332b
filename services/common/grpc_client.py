"""gRPC client channels between services: mutual TLS; the correlation id, and the signed principal the
gateway made for the request being served (services.common.principal), ride in metadata on every call.

W3C trace context is added by the OpenTelemetry client instrumentation (see telemetry.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.context import CORRELATION_METADATA_KEY, current_correlation_id
from services.common.principal import PRINCIPAL_METADATA_KEY, outgoing_principal_var
from services.common.tls import GrpcTls

# Clients ping an idle connection this often, so a dead peer is noticed; servers must accept pings at
# that rate (grpc_server.server_options), or gRPC's default policy answers the third with GOAWAY
# "too_many_pings" and every call still open on that connection fails as UNAVAILABLE after ~2 minutes.
KEEPALIVE_MS = 30_000


def _with_correlation_id(client_call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    correlation_id = current_correlation_id()
    # Only the gateway sets an outgoing principal; no service's channel forwards the one it verified
    # (the router's calls to inference carry none). The one deliberate exception is named at its call:
    # the router passes the caller's assertion to rag's Query itself (services/router/rag_client.py).
    principal = outgoing_principal_var.get()
    if not correlation_id and not principal:
        return client_call_details
    metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
    if correlation_id and CORRELATION_METADATA_KEY not in metadata:
        metadata.add(CORRELATION_METADATA_KEY, correlation_id)
    if principal and PRINCIPAL_METADATA_KEY not in metadata:
        metadata.add(PRINCIPAL_METADATA_KEY, principal)
    return grpc.aio.ClientCallDetails(
        client_call_details.method,
        client_call_details.timeout,
        metadata,
        client_call_details.credentials,
        client_call_details.wait_for_ready,
    )


class _CorrelationUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_with_correlation_id(details), request)


class _CorrelationUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_with_correlation_id(details), request)


class _CorrelationStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_correlation_id(details), request_iterator)


class _CorrelationStreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_correlation_id(details), request_iterator)


def call_metadata(principal: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made now, for a caller that passes it itself (a channel opened with
    ``intercept=False``): the correlation id of the request being served, and ``principal`` (a signed
    assertion; empty: none)."""
    correlation_id = current_correlation_id()
    if correlation_id and principal:
        return ((CORRELATION_METADATA_KEY, correlation_id), (PRINCIPAL_METADATA_KEY, principal))
    if principal:
        return ((PRINCIPAL_METADATA_KEY, principal),)
    return ((CORRELATION_METADATA_KEY, correlation_id),) if correlation_id else ()


def open_channel(address: str, service: str, tls: GrpcTls, *, intercept: bool = True) -> grpc.aio.Channel:
    """A mutual-TLS channel to ``service`` at ``address``, presenting ``tls``'s certificate.

    The server's certificate must name ``service`` (DNS SAN), whatever the address: an IP, a cluster
    DNS name or a load balancer, and a certificate of another service of the suite does not pass.
    ``intercept=False`` leaves out the interceptors that add the correlation id and the principal: the
    caller passes :func:`call_metadata` on each call itself (the gateway's clients, where grpc.aio's
    intercepted call, a task of its own per call, was a visible share of the CPU per request).
    """
    interceptors = [
        _CorrelationUnaryUnary(),
        _CorrelationUnaryStream(),
        _CorrelationStreamUnary(),
        _CorrelationStreamStream(),
    ]
    return grpc.aio.secure_channel(
        address,
        tls.channel_credentials(),
        interceptors=interceptors if intercept else None,
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Reconnect quickly after a peer restarts, so readiness recovers within a second or two.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.ssl_target_name_override", service),
        ],
    )
