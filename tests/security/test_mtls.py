"""Mutual TLS between services, against the running suite: only a certificate from the suite CA gets a
call through; the probe port answers health in plaintext and nothing else.

The attacks are a process that reaches a service's port and dials it: in plaintext, over TLS without
a client certificate, and with a certificate (naming a real service) from a CA of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from goblin_tools.suite import SERVICES, Suite
from services.common.tls import cert_pem, key_pem, make_ca, make_leaf

SERVING = health_pb2.HealthCheckResponse.SERVING
CALL_TIMEOUT_S = 10


def check_health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S).status


def refused(open_channel: Callable[[], grpc.Channel]) -> grpc.StatusCode:
    """The status a health call over ``open_channel()`` fails with (the test fails if it succeeds)."""
    with open_channel() as channel, pytest.raises(grpc.RpcError) as failure:
        check_health(channel)
    return failure.value.code()


def intruder_credentials(suite: Suite) -> grpc.ChannelCredentials:
    """Trusts the suite CA (so the server is believed) but presents a 'gateway' certificate of its own CA."""
    ca, ca_key = make_ca("Intruder CA")
    cert, key = make_leaf(ca, ca_key, "gateway")
    return grpc.ssl_channel_credentials(
        root_certificates=suite.ca_file.read_bytes(), private_key=key_pem(key), certificate_chain=cert_pem(cert)
    )


@pytest.mark.parametrize("service", SERVICES)
def test_only_a_suite_certificate_gets_a_call_through(suite: Suite, service: str) -> None:
    address = suite.grpc_address(service)
    override = [("grpc.ssl_target_name_override", service)]

    assert refused(lambda: grpc.insecure_channel(address)) == grpc.StatusCode.UNAVAILABLE
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=suite.ca_file.read_bytes())
    assert refused(lambda: grpc.secure_channel(address, no_client_cert, options=override)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    intruder = intruder_credentials(suite)
    assert refused(lambda: grpc.secure_channel(address, intruder, options=override)) == grpc.StatusCode.UNAVAILABLE

    with suite.grpc_channel(service) as channel:
        assert check_health(channel) == SERVING


@pytest.mark.parametrize("service", SERVICES)
def test_the_probe_port_answers_health_and_nothing_else(suite: Suite, service: str) -> None:
    with grpc.insecure_channel(suite.probe_address(service)) as channel:
        assert check_health(channel) == SERVING
        list_models = channel.unary_unary("/goblin.v1.Router/ListModels")
        with pytest.raises(grpc.RpcError) as failure:
            list_models(b"", timeout=CALL_TIMEOUT_S)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
        issue_key = channel.unary_unary("/goblin.v1.Auth/CreateApiKey")
        with pytest.raises(grpc.RpcError) as failure:
            issue_key(b"", timeout=CALL_TIMEOUT_S)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_server_certificate_of_another_service_is_refused_by_the_client(suite: Suite) -> None:
    # The gateway dials "router" at an address; whatever answers there must hold the router's certificate.
    wrong_name = [("grpc.ssl_target_name_override", "rag")]
    credentials = suite.grpc_tls().channel_credentials()
    assert refused(lambda: grpc.secure_channel(suite.grpc_address("router"), credentials, options=wrong_name)) == (
        grpc.StatusCode.UNAVAILABLE
    )
