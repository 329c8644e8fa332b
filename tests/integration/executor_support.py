"""What the executor tests share: one whole suite (real processes, real Postgres, real subprocesses),
started once for test_executor.py and tests/security/test_task_attacks.py, extra executor processes
against its Postgres, and small helpers to drive tasks through the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from goblin.v1 import executor_pb2_grpc
from goblin_tools.suite import ROOT, Suite, free_ports, start_suite
from tests.integration.principals import as_caller

# Short enough to watch: a lost executor's task is failed about LEASE_S after it died.
LEASE_S = 3
MAX_QUEUED = 8
ADMIN_EMAIL = "admin@goblin.local"
ADMIN_PASSWORD = "admin password for the executor tests"
SUITE_ENV = {
    "GOBLIN_ADMIN_EMAIL": ADMIN_EMAIL,
    "GOBLIN_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "GOBLIN_EXECUTOR_ALLOW_SCRIPTS": "true",
    "GOBLIN_EXECUTOR_LEASE_S": str(LEASE_S),
    "GOBLIN_EXECUTOR_POLL_S": "0.5",
    "GOBLIN_EXECUTOR_MAX_QUEUED_PER_TENANT": str(MAX_QUEUED),
    "GOBLIN_EXECUTOR_CONCURRENCY": "2",
}
FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
PASSWORD = "a long enough password"

_shared: list[Suite] = []


def executor_suite_fixture() -> Callable[..., Suite]:
    """A session fixture for a test module; every module gets the same running suite."""

    @pytest.fixture(scope="session")
    def exec_suite(
        tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str, request
    ) -> Suite:
        def stop() -> None:
            while _shared:
                _shared.pop().stop()

        request.addfinalizer(stop)
        if not _shared:
            suite = start_suite(
                tmp_path_factory.mktemp("executor-suite"), DATABASE_URL=new_database(), REDIS_URL=redis_url, **SUITE_ENV
            )
            try:
                suite.wait_ready()
            except Exception:
                suite.stop()
                raise
            _shared.append(suite)
        return _shared[0]

    return exec_suite


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user(suite: Suite, *, tenant_id: str = "", role: str = "user") -> str:
    """A new user (made by the admin) and the access token of their first sign-in (scopes ``*``)."""
    email = f"tasks-{uuid.uuid4().hex[:10]}@example.com"
    with suite.client() as client:
        session = client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert session.status_code == 200, session.text
        if tenant_id and tenant_id != "default":
            made = client.post(
                "/auth/tenants",
                json={"id": tenant_id, "name": tenant_id},
                headers=bearer(session.json()["access_token"]),
            )
            assert made.status_code in (201, 409), made.text
        reply = client.post(
            "/auth/register",
            json={"email": email, "password": PASSWORD, "tenant_id": tenant_id, "role": role},
            headers=bearer(session.json()["access_token"]),
        )
        assert reply.status_code == 201, reply.text
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return login.json()["access_token"]


def api_key(suite: Suite, token: str, scopes: list[str]) -> str:
    with suite.client(headers=bearer(token)) as client:
        reply = client.post("/auth/api-keys", json={"name": "tasks test", "scopes": scopes})
    assert reply.status_code == 201, reply.text
    return reply.json()["key"]


def submit(client: httpx.Client, expect: int = 202, headers: dict[str, str] | None = None, **body: Any) -> dict:
    reply = client.post("/v1/tasks", json=body, headers=headers or {})
    assert reply.status_code == expect, reply.text
    return reply.json()


def get_task(client: httpx.Client, task_id: str) -> dict:
    """The task; an executor restarting (a 502/503 meanwhile) is waited for, a few seconds at most."""
    deadline = time.monotonic() + 30
    while True:
        reply = client.get(f"/v1/tasks/{task_id}")
        if reply.status_code < 500 or time.monotonic() > deadline:
            assert reply.status_code == 200, reply.text
            return reply.json()
        time.sleep(0.2)


def wait_final(client: httpx.Client, task_id: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        task = get_task(client, task_id)
        if task["status"] in FINAL or time.monotonic() > deadline:
            assert task["status"] in FINAL, json.dumps(task)
            return task
        time.sleep(0.1)


def wait_status(client: httpx.Client, task_id: str, status: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        task = get_task(client, task_id)
        if task["status"] == status:
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def read_events(client: httpx.Client, task_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    """Every SSE event of the task's stream (it ends after the final status): id, event and data."""
    events: list[dict] = []
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers or {}, timeout=60) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in reply.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def direct_stub(suite: Suite, address: str | None = None) -> tuple[grpc.Channel, executor_pb2_grpc.ExecutorStub]:
    """A direct gRPC line to an executor (the suite's, or a replica at ``address``) with the suite's
    client certificate, as a gateway replica has."""
    if address is None:
        channel = suite.grpc_channel("executor")
    else:
        channel = grpc.secure_channel(
            address, suite.grpc_tls().channel_credentials(), options=[("grpc.ssl_target_name_override", "executor")]
        )
    return channel, executor_pb2_grpc.ExecutorStub(channel)


def signed_admin(suite: Suite) -> tuple[tuple[str, str]]:
    """Metadata with a fresh principal of an admin (role and scope), signed as the gateway signs."""
    return as_caller(suite, user_id="direct-admin", tenant_id="default", role="admin", scopes=("*",))


def query(suite: Suite, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


class ExecutorProcess:
    """One more executor replica, as a real process (``python -m services.executor``) against the
    suite's Postgres, with the suite's certificates and keys and ports of its own."""

    def __init__(self, suite: Suite, log_path: Path, **env: str) -> None:
        ports = free_ports(3)
        self.env = {
            **suite.env,
            **env,
            "GOBLIN_EXECUTOR_PORT": str(ports[0]),
            "GOBLIN_EXECUTOR_METRICS_PORT": str(ports[1]),
            "GOBLIN_EXECUTOR_PROBE_PORT": str(ports[2]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
        }
        self.log_path = log_path
        self.address = f"127.0.0.1:{ports[0]}"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.executor"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_serving(self, timeout_s: float = 60) -> None:
        """Until its log says it is ready (its workers claim from then on)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            if "executor ready" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise TimeoutError(self.log_path.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
