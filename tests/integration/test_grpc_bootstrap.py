"""One service process on its own: health lifecycle, reflection, metrics, error mapping, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from goblin.v1 import auth_pb2, auth_pb2_grpc
from goblin_tools.suite import free_ports
from services.common.tls import GrpcTls, grpc_cert_files, issue_suite_certificates

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# Each started service's address -> the suite identity a client presents to it (mutual TLS).
_CLIENT_TLS: dict[str, tuple[str, GrpcTls]] = {}


def start(service: str, env_extra: dict[str, str], home: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    grpc_port, metrics_port, probe_port = free_ports(3)
    tls_dir = home / "tls"
    issue_suite_certificates(tls_dir)  # what `goblin up` does before it starts a service
    cert, key = grpc_cert_files(tls_dir, "gateway")
    identity = GrpcTls((tls_dir / "ca.pem").read_bytes(), cert.read_bytes(), key.read_bytes())
    _CLIENT_TLS[f"127.0.0.1:{grpc_port}"] = (service, identity)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOBLIN_")}
    env.update(
        {
            "GOBLIN_HOME": str(home),
            f"GOBLIN_{service.upper()}_PORT": str(grpc_port),
            f"GOBLIN_{service.upper()}_METRICS_PORT": str(metrics_port),
            f"GOBLIN_{service.upper()}_PROBE_PORT": str(probe_port),
            **env_extra,
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, f"127.0.0.1:{grpc_port}", metrics_port


def channel_to(address: str) -> grpc.Channel:
    """A mutual-TLS channel to a service :func:`start` started."""
    service, identity = _CLIENT_TLS[address]
    return grpc.secure_channel(
        address, identity.channel_credentials(), options=[("grpc.ssl_target_name_override", service)]
    )


def health(address: str, service: str = "") -> int | None:
    with channel_to(address) as channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                .status
            )
        except grpc.RpcError:
            return None


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met")


@pytest.fixture
def auth_process(
    tmp_path: Path, new_database: Callable[[], str], redis_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    process, address, metrics_port = start("auth", {"DATABASE_URL": new_database(), "REDIS_URL": redis_url}, tmp_path)
    yield process, address, metrics_port
    if process.poll() is None:
        process.kill()
        process.wait()


def test_not_serving_until_dependencies_answer(tmp_path: Path, redis_url: str) -> None:
    # A database that cannot be reached: the process runs, answers health, and says NOT_SERVING.
    process, address, _ = start(
        "router",
        {"DATABASE_URL": f"postgresql://postgres@/postgres?host={tmp_path}/nowhere", "REDIS_URL": redis_url},
        tmp_path,
    )
    try:
        wait_for(lambda: health(address) is not None)
        assert health(address) == NOT_SERVING
        assert health(address, "goblin.v1.Router") == NOT_SERVING
        time.sleep(1.0)
        assert health(address) == NOT_SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_serving_reflection_metrics_and_graceful_stop(auth_process: tuple) -> None:
    process, address, metrics_port = auth_process
    wait_for(lambda: health(address) == SERVING)
    assert health(address, "goblin.v1.Auth") == SERVING

    with channel_to(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    listed = {s.name for s in replies[0].list_services_response.service}
    assert {"goblin.v1.Auth", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed

    # A domain error leaves as its gRPC status with the error code in the trailers.
    with channel_to(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            auth_pb2_grpc.AuthStub(channel).Authenticate(
                auth_pb2.AuthenticateRequest(credential="gk_wrong"),
                metadata=(("x-correlation-id", "corr-test-1"),),
                timeout=5,
            )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("goblin-error-code", "unauthorized") in info.value.trailing_metadata()

    # A method the server does not have answers UNIMPLEMENTED, never a crash.
    with channel_to(address) as channel:
        missing = channel.unary_unary("/goblin.v1.Auth/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as info:
            missing(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert (
        'goblin_grpc_server_handled_total{grpc_code="UNAUTHENTICATED",grpc_method="Authenticate",'
        'grpc_service="goblin.v1.Auth"} 1.0' in metrics
    )

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    stderr = process.stderr.read().decode()
    # JSON log lines: match the field, not one serializer's spacing (orjson writes no spaces).
    assert re.search(r'"message":\s*"auth stopped"', stderr), stderr


def test_a_second_inference_on_the_same_model_refuses_to_start(tmp_path: Path) -> None:
    """The single-instance rule: one process owns a model file on a machine (flock), a second exits at once."""
    first, address, _ = start("inference", {}, tmp_path)
    try:
        wait_for(lambda: health(address) == SERVING, timeout_s=120)
        second, _, _ = start("inference", {}, tmp_path)
        assert second.wait(timeout=60) == 1
        message = second.stderr.read().decode()
        assert "inference for" in message and "already running" in message and str(first.pid) in message
        assert health(address) == SERVING, "the refused second copy disturbed the first"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
