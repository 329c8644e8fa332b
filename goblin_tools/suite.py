"""The whole Goblin suite as real processes (``goblin up``) on free ports, for tests and benchmarks."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psutil

from services.common.tls import CA_FILE, GrpcTls, grpc_cert_files
from services.common.topology import BACKEND_SERVICES

ROOT = Path(__file__).resolve().parents[1]
GOBLIN = Path(sys.executable).parent / "goblin"
SERVICES = BACKEND_SERVICES


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(count: int) -> list[int]:
    """``count`` free ports for a suite's listeners, chosen below the kernel's ephemeral range: a port
    from that range can be taken by any outgoing connection (the load generator's thousands, say) the
    moment a restarting service lets go of it, and the service then cannot bind it again."""
    low, _ = _ephemeral_range()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    sockets, ports = [], []
    for port in candidates:
        if len(ports) == count:
            break
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        sockets.append(s)
        ports.append(port)
    for s in sockets:
        s.close()
    if len(ports) < count:
        raise RuntimeError(f"only {len(ports)} free ports below the ephemeral range {low}")
    return ports


def suite_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for ``goblin up`` in ``home`` with every port free; URLs come from ``extra``."""
    ports = free_ports(1 + 3 * len(SERVICES))  # the gateway's, then each service's gRPC, metrics and probe ports
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOBLIN_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"GOBLIN_HOME": str(home), "GOBLIN_GATEWAY_PORT": str(ports[0]), "LOG_LEVEL": "INFO"})
    # Tests poll and hammer the gateway; the rate-limit tests start their own suite with real limits.
    for route_class in ("AUTH", "CHAT", "HEALTH", "DEFAULT", "JWKS", "USER"):
        env[f"GOBLIN_RATE_LIMIT_{route_class}"] = "100000/minute"
    for i, name in enumerate(SERVICES):
        env[f"GOBLIN_{name.upper()}_PORT"] = str(ports[1 + i])
        env[f"GOBLIN_{name.upper()}_METRICS_PORT"] = str(ports[1 + len(SERVICES) + i])
        env[f"GOBLIN_{name.upper()}_PROBE_PORT"] = str(ports[1 + 2 * len(SERVICES) + i])
    env.update(extra)
    return env


@dataclass
class Suite:
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.env['GOBLIN_GATEWAY_PORT']}"

    @property
    def ca_file(self) -> Path:
        return self.home / "tls" / "ca.pem"

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    def grpc_address(self, service: str) -> str:
        return f"127.0.0.1:{self.env[f'GOBLIN_{service.upper()}_PORT']}"

    def probe_address(self, service: str) -> str:
        """The service's plaintext health-only port (what a kubelet probe dials)."""
        return f"127.0.0.1:{self.env[f'GOBLIN_{service.upper()}_PROBE_PORT']}"

    def grpc_tls(self, identity: str = "gateway") -> GrpcTls:
        """The suite CA and ``identity``'s certificate and key, as ``goblin up`` issued them."""
        tls_dir = self.home / "tls"
        cert, key = grpc_cert_files(tls_dir, identity)
        return GrpcTls(ca=(tls_dir / CA_FILE).read_bytes(), cert=cert.read_bytes(), key=key.read_bytes())

    def grpc_channel(self, service: str) -> grpc.Channel:
        """A blocking mutual-TLS channel to ``service``, presenting the gateway's client certificate."""
        return grpc.secure_channel(
            self.grpc_address(service),
            self.grpc_tls().channel_credentials(),
            options=[("grpc.ssl_target_name_override", service)],
        )

    def grpc_aio_channel(self, service: str) -> grpc.aio.Channel:
        """The asyncio twin of :meth:`grpc_channel`."""
        return grpc.aio.secure_channel(
            self.grpc_address(service),
            self.grpc_tls().channel_credentials(),
            options=[("grpc.ssl_target_name_override", service)],
        )

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'GOBLIN_{service.upper()}_METRICS_PORT']}/metrics"

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.gateway_url, verify=self.ssl_context(), **kwargs)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def admin_client(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.admin_key}"})

    def service_process(self, service: str) -> psutil.Process:
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.cmdline()[-1] == f"services.{service}":
                    return child
            except psutil.NoSuchProcess:
                continue
        raise LookupError(f"no running process for {service}")

    def log_lines(self) -> list[str]:
        """The complete lines of the suite's log: a line still being written is left out."""
        return self.log_path.read_text(errors="replace").split("\n")[:-1]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"goblin up exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if not self.ca_file.exists():
                    raise FileNotFoundError(self.ca_file)
                with self.client(timeout=3) as client:
                    reply = client.get("/health/ready")
                if reply.status_code == 200:
                    return
                last = reply.text
            except (httpx.HTTPError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"suite not ready after {timeout_s}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_suite(home: Path, **extra: str) -> Suite:
    home.mkdir(parents=True, exist_ok=True)
    env = suite_env(home, **extra)
    log_path = home / "suite.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(GOBLIN), "up"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Suite(home=home, env=env, process=process, log_path=log_path, extra=extra)


@contextmanager
def catalog_suite(home: Path, catalog: str, **extra: str) -> Iterator[Suite]:
    """The suite in ``home`` with ``catalog`` (the router's catalog, YAML) as its GOBLIN_CATALOG_FILE and
    ``extra`` in its environment, ready; stopped afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    catalog_file = home / "catalog.yaml"
    catalog_file.write_text(catalog)
    suite = start_suite(home / "suite", GOBLIN_CATALOG_FILE=str(catalog_file), **extra)
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()
