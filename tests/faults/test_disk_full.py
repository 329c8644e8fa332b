"""Disk full for GOBLIN_HOME (issue 19, case 7): the suite runs with its GOBLIN_HOME on a small
filesystem of its own, which is filled while the mixed load of goblin_tools/faults.py runs, then freed.

What lives on the small filesystem: all of GOBLIN_HOME (TLS certificates and keys, the admin key and
the key-encryption key, the write-ahead journals, the instance locks, RAG's Chroma and keyword index,
the executor's work directories). What does not: PostgreSQL and Redis (their own data directories,
as a deployment's servers are; a database whose disk fills is that database's failure, not the
suite's) and the suite's log (so the test can read it whatever happens).

How the small filesystem is made, without Docker and without touching the machine's mounts: a tmpfs
of a fixed size mounted in a mount namespace of the suite's own, by bubblewrap (works as root and, on
kernels that allow unprivileged user namespaces, as a user) or, as root without bubblewrap, by
``unshare -m``. The test reaches the filesystem from outside through ``/proc/<pid>/root``. When
neither works the module is skipped with the reason.

What must hold: every request answered OK or refused clearly, none hung; no answered chat missing from
the routing ledger; no service restarted; the operator told (a log line and
``goblin_journal_rows_unjournaled_total``); once space returns, journaling resumes without restarts,
and the keys, certificates and journals are intact (a service killed then comes back and replays).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.faults import (
    CATALOG,
    RECOVERY_S,
    ROUTE_TIMEOUT_S,
    SUITE_ENV,
    CaseResult,
    Outcome,
    Stores,
    ledger_missing,
    run_case,
)
from goblin_tools.suite import GOBLIN, ROOT, SERVICES, Suite, suite_env

pytestmark = pytest.mark.faults

SMALL_FS_BYTES = 64 << 20  # room for what the suite writes at start (Chroma's files the most), then filled
FULL_HOLD_S = 5.0


def _small_fs_prefixes(directory: Path, size: int) -> list[tuple[str, list[str]]]:
    """Commands that run what follows them with a ``size``-byte tmpfs at ``directory``, best first."""
    prefixes = []
    if bwrap := shutil.which("bwrap"):
        prefixes.append(
            ("bubblewrap", [bwrap, "--dev-bind", "/", "/", "--size", str(size), "--tmpfs", str(directory), "--"])
        )
    if (unshare := shutil.which("unshare")) and os.geteuid() == 0:
        mount = 'mount -t tmpfs -o size="$0" goblin-small "$1" && shift 2 && exec "$@"'
        prefixes.append(
            ("unshare -m", [unshare, "-m", "--propagation", "private", "sh", "-c", mount, str(size), str(directory)])
        )
    return prefixes


def small_fs_prefix(directory: Path, size: int) -> tuple[str, list[str]]:
    """The first method that works here (tried with ``df``), or a skip naming what was tried."""
    tried = []
    for name, prefix in _small_fs_prefixes(directory, size):
        probe = subprocess.run([*prefix, "df", "-B1", "--output=size", str(directory)], capture_output=True, timeout=30)
        if probe.returncode == 0 and str(size) in probe.stdout.decode():
            return name, prefix
        tried.append(f"{name}: {probe.stderr.decode().strip()[:200] or probe.stdout.decode().strip()[:200]}")
    pytest.skip("no way to mount a small filesystem here: " + ("; ".join(tried) or "neither bwrap nor root"))


@dataclass
class SmallHome:
    suite: Suite
    method: str
    inner_pid: int  # `goblin up`, inside the mount namespace
    admin_key: str
    kek: bytes

    @property
    def outside(self) -> Path:
        """GOBLIN_HOME as this process reaches it (through the namespace's root)."""
        return self.suite.home

    def fill(self, until: threading.Event | None = None) -> int:
        """Fill the filesystem to the last byte; with ``until``, keep taking every byte freed meanwhile
        (as a runaway log would) until it is set. Returns how much was written."""
        written = 0
        with (self.outside / "filler").open("ab", buffering=0) as f:
            while True:
                for chunk in (1 << 20, 4096, 1):
                    block = b"\0" * chunk
                    while True:
                        try:
                            written += f.write(block) or 0
                        except OSError as exc:
                            if exc.errno != errno.ENOSPC:
                                raise
                            break
                # A journal emptied in place gives its pages back: take them before it writes again.
                if until is None or until.wait(0.002):
                    return written

    def free(self) -> None:
        (self.outside / "filler").unlink()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.outside).free


def service_pids(suite: Suite, inner_pid: int) -> dict[str, int]:
    """Each service's pid (children of `goblin up`, which runs inside the namespace)."""
    pids = {}
    for child in psutil.Process(inner_pid).children():
        try:
            name = child.cmdline()[-1].removeprefix("services.")
        except (psutil.NoSuchProcess, IndexError):
            continue
        if name in (*SERVICES, "gateway"):
            pids[name] = child.pid
    return pids


def _inner_goblin(outer: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """The `goblin up` process under the namespace launcher (bubblewrap forks it; unshare execs it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        own = os.readlink("/proc/self/ns/mnt")
        for process in [psutil.Process(outer.pid), *psutil.Process(outer.pid).children(recursive=True)]:
            try:
                # The launcher's own command line ends the same way: the one in another namespace is it.
                inside = os.readlink(f"/proc/{process.pid}/ns/mnt") != own
                if inside and process.cmdline()[-2:] == [str(GOBLIN), "up"]:
                    return process.pid
            except (psutil.NoSuchProcess, FileNotFoundError):
                continue
        if outer.poll() is not None:
            raise RuntimeError(f"the namespace launcher exited with {outer.returncode}")
        time.sleep(0.05)
    raise TimeoutError("goblin up did not start under the namespace launcher")


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallHome]:
    base = tmp_path_factory.mktemp("diskfull")
    home = base / "home"  # inside the namespace: the small tmpfs; outside: an empty directory
    home.mkdir()
    method, prefix = small_fs_prefix(home, SMALL_FS_BYTES)
    print(f"\nsmall GOBLIN_HOME ({SMALL_FS_BYTES >> 20} MiB tmpfs) by {method}")
    stores = Stores(base / "stores")
    log_path = base / "suite.log"
    try:
        with FakeProviders() as fake:
            catalog = base / "catalog.yaml"
            catalog.write_text(CATALOG.format(port=fake.port))
            extra = {
                "GOBLIN_CATALOG_FILE": str(catalog),
                "DATABASE_URL": stores.database_url,
                "REDIS_URL": stores.redis_url,
                "ACME_API_KEY": fake.key("acme"),
                **SUITE_ENV,
            }
            env = suite_env(home, **extra)
            with log_path.open("wb") as log:
                outer = subprocess.Popen(
                    [*prefix, str(GOBLIN), "up"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            inner = _inner_goblin(outer)
            suite = Suite(
                home=Path(f"/proc/{inner}/root{home}"), env=env, process=outer, log_path=log_path, extra=extra
            )
            try:
                suite.wait_ready()
                yield SmallHome(suite, method, inner, suite.admin_key, (suite.home / "auth-kek.key").read_bytes())
            finally:
                try:
                    os.kill(inner, signal.SIGINT)  # `goblin up` stops its services; the launcher then exits
                except ProcessLookupError:
                    pass
                try:
                    outer.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    outer.kill()
                    outer.wait()
    finally:
        stores.close()


def metric_total(suite: Suite, service: str, name: str) -> float:
    text = httpx.get(suite.metrics_url(service), timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def restart(small: SmallHome, service: str, timeout_s: float = 120) -> None:
    """SIGKILL ``service`` and return once the supervisor has started it again (ready or not)."""
    old = service_pids(small.suite, small.inner_pid)[service]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while service_pids(small.suite, small.inner_pid).get(service, old) == old:
        assert time.monotonic() < deadline, f"{service} was not started again:\n{small.suite.log_tail(40)}"
        time.sleep(0.1)


def readiness(suite: Suite, timeout_s: float = 60) -> dict[str, str]:
    """Each backend's state as the gateway's /health/ready reports it (waiting for the gateway)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with suite.client(timeout=5) as client:
                return client.get("/health/ready").json()["services"]
        except (httpx.HTTPError, ValueError, KeyError):
            assert time.monotonic() < deadline, f"the gateway does not answer:\n{suite.log_tail(40)}"
            time.sleep(0.2)


def settle(suite: Suite, settle_s: float) -> dict[str, str]:
    """Readiness once every backend is serving, or after ``settle_s`` (some may wait for space)."""
    deadline = time.monotonic() + settle_s
    states = readiness(suite)
    while any(state != "SERVING" for state in states.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        states = readiness(suite)
    return states


def test_a_full_goblin_home_under_load_answers_cleanly_and_loses_nothing(small_home: SmallHome) -> None:
    suite = small_home.suite
    pids = service_pids(suite, small_home.inner_pid)
    before = metric_total(suite, "router", "goblin_journal_rows_unjournaled_total")

    async def fault(clock: Callable[[], float]) -> float:
        done = threading.Event()
        hog = asyncio.create_task(asyncio.to_thread(small_home.fill, done))
        await asyncio.sleep(FULL_HOLD_S)
        done.set()
        await hog
        await asyncio.to_thread(small_home.free)
        return clock()

    result = asyncio.run(
        run_case(suite, "GOBLIN_HOME full", broken=frozenset(), fault=fault, duration_s=12, timeout_s=ROUTE_TIMEOUT_S)
    )
    result.lost = ledger_missing(suite, result)
    failures = result.failures()
    detail = "\n".join(f"  {o.kind} at {o.sent_at:.2f}s: {o.status} {o.error} hung={o.hung}" for o in failures[:20])
    print(f"\n({small_home.method}) {result.row()}\n{detail}")
    assert not failures, f"{len(failures)} requests failed or hung:\n{detail}\n{suite.log_tail(60)}"
    assert result.lost == 0, f"{result.lost} answered chats missing from the ledger"
    assert result.recovery_s() <= RECOVERY_S
    assert service_pids(suite, small_home.inner_pid) == pids, "a service restarted"
    # The operator is told: a counter and one log line per journal, not one per row.
    assert metric_total(suite, "router", "goblin_journal_rows_unjournaled_total") > before
    lines = [line for line in suite.log_lines() if "rows are not journaled (no space left" in line]
    assert lines and len(lines) <= 8, lines[:10]
    assert any("journaling again" in line for line in suite.log_lines())


def test_services_restarted_while_it_is_full_wait_for_space_and_need_no_other_restart(small_home: SmallHome) -> None:
    """Every service SIGKILLed while GOBLIN_HOME is full is started again and either serves or waits,
    not ready, saying why (no crash loop); the chat path serves; once space returns every one is ready
    by itself."""
    suite = small_home.suite
    small_home.fill()
    try:
        for service in ("router", "auth", "inference", "rag", "executor", "gateway"):
            restart(small_home, service)
        pids = service_pids(suite, small_home.inner_pid)
        states = settle(suite, 45)
        waiting = sorted(name for name, state in states.items() if state != "SERVING")
        print(f"\n({small_home.method}) while full, after a restart: {states}")
        for name in waiting:
            said = [line for line in suite.log_lines() if f'"service": "{name}"' in line and "full" in line.lower()]
            assert said, f"{name} is not ready and did not say the disk is full:\n{suite.log_tail(40)}"
        assert {"router", "auth"}.isdisjoint(waiting), states  # they keep nothing on disk at start
        with suite.admin_client() as client:
            chat = {"model": "house", "messages": [{"role": "user", "content": "hi"}]}
            reply = client.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
    finally:
        small_home.free()
    suite.wait_ready(timeout_s=120)
    assert service_pids(suite, small_home.inner_pid) == pids, "a service needed another restart"


def test_state_is_intact_after_space_returns(small_home: SmallHome) -> None:
    suite = small_home.suite
    assert small_home.free_bytes() > 1 << 20
    assert suite.admin_key == small_home.admin_key
    assert (suite.home / "auth-kek.key").read_bytes() == small_home.kek
    suite.ssl_context()  # the CA still loads
    for segment in (suite.home / "journal").glob("*.jsonl"):
        lines = segment.read_bytes().split(b"\n")
        for line in lines[:-1]:  # every complete line is a row (only a crash may tear the last one)
            json.loads(line)
    # Chats answered now are journaled again, and a router killed right after answering replays them.
    correlations = []
    with suite.admin_client() as client:
        for i in range(20):
            correlation = f"after-full-{i}-{time.time_ns()}"
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "house", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Correlation-ID": correlation},
            )
            assert reply.status_code == 200, reply.text
            correlations.append(correlation)
    restart(small_home, "router")
    answered = CaseResult("after", [Outcome("chat_fake", 0, 200, correlation_id=c) for c in correlations], frozenset())
    assert ledger_missing(suite, answered) == 0
