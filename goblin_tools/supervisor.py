"""``goblin up``: the whole suite on one machine, supervised.

Starts embedded PostgreSQL and Redis when no URL is configured, applies migrations, then runs the six
services as child processes, each with a DATABASE_URL of its own (see ``Supervisor._prepare_database``),
restarting any that dies with exponential backoff. Ctrl-C or SIGTERM stops the children (SIGTERM, then
SIGKILL after the grace period) and the embedded stores. A lock file under GOBLIN_HOME refuses a second
copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import Field, model_validator

from goblin_tools.embedded import EmbeddedPostgres, EmbeddedRedis
from services.common import db
from services.common.principal import suite_principal_env
from services.common.process import InstanceLock, die_with_parent, usable_cores
from services.common.settings import GoblinSettings
from services.common.tls import issue_suite_certificates, private_dir
from services.common.topology import BACKEND_SERVICES, GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS

log = logging.getLogger("goblin.supervisor")

SERVICE_ORDER = ("auth", "router", "inference", "rag", "executor", "gateway")
RESTART_BACKOFF_START_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child that ran this long has its backoff reset
STOP_GRACE_S = 10.0


def suite_decode_threads() -> int:
    """The most decoding threads inference may use when the whole suite shares this machine: all cores.

    llama.cpp's threads wait for each other at every step, so one thread preempted by the other
    services stalls them all; inference steps down to cores - 1 (GOBLIN_INFERENCE_MIN_THREADS) by
    itself while other processes need a core (services/inference/engine/threads.py), and decodes on
    every core while they are idle.
    """
    return usable_cores()


class SuiteSettings(GoblinSettings):
    """What ``goblin up`` needs: the stores (optional: embedded when unset) and every port."""

    database_url: str | None = Field(None, alias="DATABASE_URL")
    # With an external DATABASE_URL, a service may connect as a role of its own (`goblin db roles`).
    auth_database_url: str | None = Field(None, alias="GOBLIN_AUTH_DATABASE_URL")
    router_database_url: str | None = Field(None, alias="GOBLIN_ROUTER_DATABASE_URL")
    executor_database_url: str | None = Field(None, alias="GOBLIN_EXECUTOR_DATABASE_URL")
    rag_database_url: str | None = Field(None, alias="GOBLIN_RAG_DATABASE_URL")
    gateway_database_url: str | None = Field(None, alias="GOBLIN_GATEWAY_DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    gateway_port: int = Field(GATEWAY_PORT, alias="GOBLIN_GATEWAY_PORT", ge=1, le=65535)
    router_port: int = Field(GRPC_PORTS["router"], alias="GOBLIN_ROUTER_PORT", ge=1, le=65535)
    inference_port: int = Field(GRPC_PORTS["inference"], alias="GOBLIN_INFERENCE_PORT", ge=1, le=65535)
    rag_port: int = Field(GRPC_PORTS["rag"], alias="GOBLIN_RAG_PORT", ge=1, le=65535)
    auth_port: int = Field(GRPC_PORTS["auth"], alias="GOBLIN_AUTH_PORT", ge=1, le=65535)
    executor_port: int = Field(GRPC_PORTS["executor"], alias="GOBLIN_EXECUTOR_PORT", ge=1, le=65535)
    router_metrics_port: int = Field(METRICS_PORTS["router"], alias="GOBLIN_ROUTER_METRICS_PORT", ge=1, le=65535)
    inference_metrics_port: int = Field(
        METRICS_PORTS["inference"], alias="GOBLIN_INFERENCE_METRICS_PORT", ge=1, le=65535
    )
    rag_metrics_port: int = Field(METRICS_PORTS["rag"], alias="GOBLIN_RAG_METRICS_PORT", ge=1, le=65535)
    auth_metrics_port: int = Field(METRICS_PORTS["auth"], alias="GOBLIN_AUTH_METRICS_PORT", ge=1, le=65535)
    executor_metrics_port: int = Field(METRICS_PORTS["executor"], alias="GOBLIN_EXECUTOR_METRICS_PORT", ge=1, le=65535)
    ready_timeout_s: float = Field(180.0, alias="GOBLIN_READY_TIMEOUT_S", gt=0)
    chroma_url: str | None = Field(None, alias="CHROMA_URL")
    # Inference on a Unix socket instead of its TCP port (services.inference.config); its peers dial it there.
    inference_uds: Path | None = Field(None, alias="GOBLIN_INFERENCE_UDS")

    @model_validator(mode="after")
    def _no_embedded_stores_in_production(self) -> SuiteSettings:
        # SPEC: the embedded stores are for one developer's machine, never for production data.
        if self.production:
            missing = [
                name
                for name, value in (
                    ("DATABASE_URL", self.database_url),
                    ("REDIS_URL", self.redis_url),
                    ("CHROMA_URL", self.chroma_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required in production (embedded stores are refused)")
        return self

    def peer_addresses(self) -> dict[str, str]:
        """Where each service listens when ``goblin up`` runs it: derived from the ports."""
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "::") else self.bind_host
        addresses = {name: f"{host}:{getattr(self, f'{name}_port')}" for name in BACKEND_SERVICES}
        if self.inference_uds:
            addresses["inference"] = f"unix:{str(self.inference_uds).removeprefix('unix:')}"
        return addresses

    def service_database_urls(self, database_url: str) -> dict[str, str]:
        """Each database-using service's URL: ``GOBLIN_<SERVICE>_DATABASE_URL`` if set, else ``database_url``."""
        return {name: getattr(self, f"{name}_database_url") or database_url for name in db.SERVICE_ROLES}

    def child_env(self, database_url: str, redis_url: str) -> dict[str, str]:
        """Environment for every child: the caller's, plus resolved stores and peer addresses."""
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "GOBLIN_HOME": str(self.goblin_home),
                "GOBLIN_BIND_HOST": self.bind_host,
                "GOBLIN_GATEWAY_PORT": str(self.gateway_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("GOBLIN_INFERENCE_THREADS", str(suite_decode_threads()))
        for name, address in self.peer_addresses().items():
            env[f"GOBLIN_{name.upper()}_ADDR"] = address
            env[f"GOBLIN_{name.upper()}_PORT"] = str(getattr(self, f"{name}_port"))
            env[f"GOBLIN_{name.upper()}_METRICS_PORT"] = str(getattr(self, f"{name}_metrics_port"))
        return env


def child_database(env: dict[str, str], database_url: str | None) -> dict[str, str]:
    """``env`` with this child's own DATABASE_URL; a child without a database (inference) gets none."""
    env = dict(env)
    if database_url is None:
        env.pop("DATABASE_URL", None)
        env.pop("DATABASE_URL_FILE", None)
    else:
        env["DATABASE_URL"] = database_url
    return env


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = RESTART_BACKOFF_START_S
    history: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: SuiteSettings, *, on_ready=None) -> None:  # noqa: ANN001
        self.settings = settings
        self.home = settings.goblin_home
        self.lock = InstanceLock(self.home / "goblin.lock", f"goblin (GOBLIN_HOME={self.home})")
        self.children = {name: Child(name) for name in SERVICE_ORDER}
        self.stopping = asyncio.Event()
        self.on_ready = on_ready
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None

    # -- stores ---------------------------------------------------------------------------------
    async def _prepare_database(self, database_url: str) -> dict[str, str]:
        """Migrate, and return each service's DATABASE_URL.

        The embedded PostgreSQL is ours: every service gets a role of its own (``goblin_<service>``,
        owning only its schema), so a local run exercises the same isolation as a deployment. An
        external database is migrated with ``DATABASE_URL``; a service connects as
        ``GOBLIN_<SERVICE>_DATABASE_URL`` when that is set (roles made by ``goblin db roles``).
        """
        if self._postgres is not None:
            await db.provision_roles(database_url)
            return {name: self._postgres.url("goblin", user=role) for name, role in db.SERVICE_ROLES.items()}
        applied = {schema: versions for schema, versions in (await db.migrate_all(database_url)).items() if versions}
        if applied:
            log.info("migrations applied", extra={"versions": applied})
        return self.settings.service_database_urls(database_url)

    def _start_stores(self) -> tuple[str, str]:
        database_url = self.settings.database_url
        if not database_url:
            self._postgres = EmbeddedPostgres(self.home / "pg")
            database_url = self._postgres.create_database("goblin")
            log.info("embedded postgres started", extra={"data_dir": str(self.home / "pg")})
        redis_url = self.settings.redis_url
        if not redis_url:
            self._redis = EmbeddedRedis(self.home / "redis")
            redis_url = self._redis.url
            log.info("embedded redis started", extra={"socket": str(self._redis.socket_path)})
        return database_url, redis_url

    def _stop_stores(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    # -- children -------------------------------------------------------------------------------
    async def _spawn(self, child: Child, env: dict[str, str]) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{child.name}",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            preexec_fn=die_with_parent,
        )
        child.started_at = time.monotonic()
        log.info("started %s", child.name, extra={"pid": child.process.pid, "restarts": child.restarts})

    async def _keep_alive(self, child: Child, env: dict[str, str]) -> None:
        """Run ``child`` until we stop, restarting it with exponential backoff whenever it exits."""
        while not self.stopping.is_set():
            await self._spawn(child, env)
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            child.history.append(code)
            ran_for = time.monotonic() - child.started_at
            if ran_for >= STABLE_AFTER_S:
                child.backoff_s = RESTART_BACKOFF_START_S
            log.warning(
                "%s exited with %s after %.1fs; restarting in %.1fs",
                child.name,
                code,
                ran_for,
                child.backoff_s,
                extra={"exit_code": code},
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=child.backoff_s)
                return
            except TimeoutError:
                pass
            child.backoff_s = min(child.backoff_s * 2, RESTART_BACKOFF_MAX_S)
            child.restarts += 1

    async def _stop_children(self) -> None:
        running = [c.process for c in self.children.values() if c.process and c.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout=STOP_GRACE_S)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("killing pid %s after %.0fs", process.pid, STOP_GRACE_S)
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))

    async def _wait_ready(self) -> bool:
        url = f"https://127.0.0.1:{self.settings.gateway_port}/health/ready"
        # An operator's own certificate may not name 127.0.0.1; this probe only asks "is it up?".
        verify: str | bool = False if os.environ.get("GOBLIN_TLS_CERT_FILE") else str(self.home / "tls" / "ca.pem")
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                async with httpx.AsyncClient(verify=verify, timeout=2) as client:
                    if (await client.get(url)).status_code == 200:
                        return True
            except (httpx.HTTPError, OSError):
                pass
            # Once a second: /health is rate-limited like everything else (60/minute by default).
            await asyncio.sleep(1.0)
        return False

    async def run(self) -> int:
        private_dir(self.home)  # the state folder: keys, the admin key, the stores' data
        self.lock.acquire()
        try:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stopping.set)
            if not self.settings.production:
                # The suite CA and every service's certificate; a deployment mounts its own instead.
                await asyncio.to_thread(issue_suite_certificates, self.home / "tls")
            database_url, redis_url = await asyncio.to_thread(self._start_stores)
            database_urls = await self._prepare_database(database_url)
            env = self.settings.child_env(database_url, redis_url)
            # The signed principal's key pair (services.common.principal): every child gets the verify key.
            env = suite_principal_env(env, self.home / "tls")
            keepers = [
                asyncio.create_task(self._keep_alive(c, child_database(env, database_urls.get(c.name))))
                for c in self.children.values()
            ]
            ready = await self._wait_ready()
            if self.on_ready is not None and not self.stopping.is_set():
                self.on_ready(self, ready)
            await self.stopping.wait()
            log.info("stopping")
            await self._stop_children()
            await asyncio.gather(*keepers, return_exceptions=True)
            return 0
        finally:
            await asyncio.to_thread(self._stop_stores)
            self.lock.release()
