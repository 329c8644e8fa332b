"""Faults under load: steady open-loop mixed traffic against a running suite while something breaks,
and what every request got. Shared by the fault tests (tests/faults/) and their report
(``python -m bench.faults``).

The traffic (``MIX``) is 50 req/s by default: chat to a fake OpenAI-compatible provider, ``local`` chat,
``/auth/me`` with an API key, and ``/health``. Each request is classified:

- ``ok``: 2xx;
- ``refused``: a clear refusal, a JSON error body with ``429`` (backpressure, with Retry-After) or ``504``
  (the route's deadline) at any time, or ``503`` from a route that needs the broken part;
  While the suite's only gateway restarts, a refused connection counts here too (in a fleet the load
  balancer sends it to a peer); a connection dropped mid-request never does;
- ``failed``: anything else: a 500, a body that is not our JSON error, a 503 from a route that does not
  need the broken part, a dropped connection. Must be 0;
- ``hung``: no answer within the route's timeout plus a margin. Must be 0.

Load and the fault run in one event loop; blocking fault actions (kill, stop a store) run in threads.
Every loop here is bounded in count and time, and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import psutil

from goblin_tools.embedded import EmbeddedPostgres, EmbeddedRedis
from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import GOBLIN, ROOT, SERVICES, Suite, catalog_suite, suite_env

# What each kind of request needs besides the gateway (a refusal is clear only when one of these is down).
NEEDS: dict[str, frozenset[str]] = {
    "chat_fake": frozenset({"gateway", "router", "auth", "postgres", "redis"}),
    "chat_local": frozenset({"gateway", "router", "inference", "auth", "postgres", "redis"}),
    "auth_me": frozenset({"gateway", "auth", "postgres", "redis"}),
    "health": frozenset({"gateway"}),
}
# Shares of the traffic (they sum to 1).
# Local chat at 2.5 req/s: what the 135M model keeps up with on 2 shared cores (at 5 req/s its queue
# refuses with 429 and its deadline answers 504 whether or not anything is broken).
MIX: dict[str, float] = {"chat_fake": 0.45, "chat_local": 0.05, "auth_me": 0.2, "health": 0.3}
CLEAR_STATUSES = frozenset({429, 503, 504})
HANG_MARGIN_S = 5.0

# A fault: breaks something, waits until it is back, and returns the case's clock (seconds since the
# load started) at that moment.
Fault = Callable[[Callable[[], float]], Awaitable[float]]


@dataclass
class Outcome:
    kind: str
    sent_at: float  # seconds since the load started
    status: int  # 0: no HTTP answer
    error: str = ""  # the JSON error code, or the exception's name
    latency_s: float = 0.0
    hung: bool = False
    correlation_id: str = ""
    retry_after: bool = False


@dataclass
class CaseResult:
    name: str
    outcomes: list[Outcome]
    broken: frozenset[str]  # what the fault took away (services or stores)
    fault_at: float = 0.0
    healed_at: float = 0.0  # the broken part is back (restarted / started again / ready)
    lost: int = 0  # answered requests missing from the books
    notes: list[str] = field(default_factory=list)

    def classify(self, o: Outcome) -> str:
        if o.hung:
            return "hung"
        if 200 <= o.status < 300:
            return "ok"
        if o.status == 0 and o.error == "ConnectError" and "gateway" in self.broken:
            return "refused"  # the only gateway is restarting: nothing listens (a peer would, in a fleet)
        if not o.error or o.status not in CLEAR_STATUSES:
            return "failed"
        if o.status == 503 and not NEEDS[o.kind] & self.broken:
            return "failed"  # only the routes that need the broken part may say it is unavailable
        return "refused"  # 429 (backpressure, with Retry-After) and 504 (the route's deadline) any time

    def counts(self) -> Counter[str]:
        return Counter(self.classify(o) for o in self.outcomes)

    def refusals(self) -> Counter[str]:
        return Counter(f"{o.status} {o.error}" for o in self.outcomes if self.classify(o) == "refused")

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if self.classify(o) in ("failed", "hung")]

    def recovery_s(self) -> float:
        """From the broken part being back to the last request of a kind that needs it not answering OK
        (0 when everything after it was answered)."""
        affected = [
            o
            for o in self.outcomes
            if NEEDS[o.kind] & self.broken and self.classify(o) != "ok" and o.status != 429  # 429: backpressure
        ]
        if not affected:
            return 0.0
        return max(0.0, max(o.sent_at for o in affected) - self.healed_at)

    def row(self) -> str:
        counts = self.counts()
        refused = ", ".join(f"{k} ×{v}" for k, v in sorted(self.refusals().items())) or "—"
        return (
            f"| {self.name} | {len(self.outcomes)} | {counts['ok']} | {refused} | {counts['failed']} | "
            f"{counts['hung']} | {self.recovery_s():.1f} s | {self.lost} |"
        )


TABLE_HEAD = (
    "| case | sent | OK | refused clearly | failed otherwise | hung | time to recover | lost |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _request(kind: str, fake_model: str) -> tuple[str, str, dict[str, Any] | None]:
    if kind == "chat_fake":
        return "POST", "/v1/chat/completions", {"model": fake_model, "messages": [{"role": "user", "content": "hi"}]}
    if kind == "chat_local":
        body = {"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        return "POST", "/v1/chat/completions", body
    if kind == "auth_me":
        return "GET", "/auth/me", None
    return "GET", "/health", None


def _kinds(total: int) -> list[str]:
    """A deterministic interleaving of the mix: each kind at its share, spread evenly."""
    order: list[tuple[float, str]] = []
    for kind, share in MIX.items():
        count = round(total * share)
        order.extend(((i + 0.5) / count, kind) for i in range(count))
    return [kind for _, kind in sorted(order)]


async def run_case(
    suite: Suite,
    name: str,
    *,
    broken: frozenset[str],
    fault: Fault,
    rate: float = 50.0,
    duration_s: float = 12.0,
    fault_after_s: float = 2.0,
    fake_model: str = "house",
    timeout_s: float = 10.0,
) -> CaseResult:
    """Load for ``duration_s`` at ``rate``; ``fault_after_s`` in, ``fault(clock)`` runs and returns when
    the broken part was back, as ``clock()`` (seconds since the load started) then. ``timeout_s`` is the
    routes' timeout in the suite (the hang bound adds a margin)."""
    kinds = _kinds(int(rate * duration_s))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    outcomes: list[Outcome] = []
    started = time.monotonic()
    # Enough connections that the generator never queues a request itself (a wait for a pooled
    # connection would be counted against the server as a hang); idle ones dropped well before the
    # gateway's keep-alive timeout (5 s), so a request never races the server closing its connection.
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {suite.admin_key}"}
    async with httpx.AsyncClient(
        base_url=suite.gateway_url, verify=suite.ssl_context(), limits=limits, headers=headers
    ) as client:

        async def one(kind: str, scheduled: float) -> None:
            method, path, body = _request(kind, fake_model)
            correlation = f"fault-{slug}-{uuid.uuid4().hex[:12]}"
            outcome = Outcome(kind, scheduled, 0, correlation_id=correlation)
            try:
                reply = await client.request(
                    method,
                    path,
                    json=body,
                    headers={"X-Correlation-ID": correlation},
                    timeout=httpx.Timeout(timeout_s + HANG_MARGIN_S, pool=None),
                )
                outcome.status = reply.status_code
                outcome.retry_after = "retry-after" in reply.headers
                if reply.status_code >= 400:
                    try:
                        outcome.error = str(reply.json().get("error", ""))
                    except ValueError:
                        outcome.error = "not-json"
            except httpx.TimeoutException:
                outcome.hung = True
            except httpx.HTTPError as exc:
                outcome.error = type(exc).__name__
            outcome.latency_s = time.monotonic() - started - scheduled
            outcomes.append(outcome)

        async def faulting() -> float:
            await asyncio.sleep(fault_after_s)
            return await fault(lambda: time.monotonic() - started)

        fault_task = asyncio.create_task(faulting())
        tasks = []
        for i, kind in enumerate(kinds):
            scheduled = i / rate
            delay = started + scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(kind, scheduled)))
        healed_at = await fault_task
        await asyncio.gather(*tasks)
    return CaseResult(name, outcomes, broken, fault_at=fault_after_s, healed_at=healed_at)


async def in_thread(action: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(action)


async def wait_serving(suite: Suite, name: str, clock: Callable[[], float], timeout_s: float = 90.0) -> float:
    """Poll /health/ready until ``name`` is back (the gateway: it answers 200; any other part: the
    gateway reports it SERVING); ``clock()`` then."""

    def back(reply: httpx.Response) -> bool:
        if name == "gateway":
            return reply.status_code == 200
        return reply.json().get("services", {}).get(name) == "SERVING"

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=suite.gateway_url, verify=suite.ssl_context(), timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if back(await client.get("/health/ready")):
                    return clock()
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} was not serving again within {timeout_s}s")


# -- the suite the cases run against ---------------------------------------------------------------

ROUTE_TIMEOUT_S = 10.0
RECOVERY_S = 5.0
SUITE_ENV = {
    "GOBLIN_REQUEST_TIMEOUT_S": str(ROUTE_TIMEOUT_S),
    "GOBLIN_CHAT_TIMEOUT_S": str(ROUTE_TIMEOUT_S),
    "GOBLIN_PROVIDER_TIMEOUT_S": "3",
    "GOBLIN_ROUTER_RETRIES": "1",
    "GOBLIN_ROUTER_RETRY_BASE_S": "0.01",
}
CATALOG = """
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{port}/acme/v1
models:
  acme/acme-chat:
    aliases: [house]
    context_length: 8000
    input_price_per_mtok: 1.0
    output_price_per_mtok: 2.0
"""


class Stores:
    """The suite's PostgreSQL and Redis, which cases stop and start again in place."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.postgres: EmbeddedPostgres | None = EmbeddedPostgres(base / "pg")
        self.database_url = self.postgres.create_database("goblin")
        self.redis: EmbeddedRedis | None = EmbeddedRedis(base / "redis")
        self.redis_url = self.redis.url

    def stop_postgres(self) -> None:
        assert self.postgres is not None
        self.postgres.stop()
        self.postgres = None

    def start_postgres(self) -> None:
        self.postgres = EmbeddedPostgres(self.base / "pg")  # same data and socket directory

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop()
        self.redis = None

    def start_redis(self) -> None:
        self.redis = EmbeddedRedis(self.base / "redis")  # same data and socket

    def close(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


@contextmanager
def fault_suite(base: Path) -> Iterator[tuple[Suite, Stores, FakeProviders]]:
    """The whole suite on stores of its own (so cases can stop them) and a fake provider, ready."""
    stores = Stores(base / "stores")
    try:
        with (
            FakeProviders() as fake,
            catalog_suite(
                base,
                CATALOG.format(port=fake.port),
                DATABASE_URL=stores.database_url,
                REDIS_URL=stores.redis_url,
                ACME_API_KEY=fake.key("acme"),
                **SUITE_ENV,
            ) as suite,
        ):
            yield suite, stores, fake
    finally:
        stores.close()


# -- faults: each returns when the broken part is back, as the case's clock then ------------------


def signal_service(suite: Suite, service: str, sig: signal.Signals) -> Fault:
    async def fault(clock: Callable[[], float]) -> float:
        os.kill(suite.service_process(service).pid, sig)
        await asyncio.sleep(0.5)  # the supervisor notices and restarts it
        return await wait_serving(suite, service, clock)

    return fault


def store_away(suite: Suite, stop: Callable[[], None], start: Callable[[], None], name: str, away_s: float) -> Fault:
    async def fault(clock: Callable[[], float]) -> float:
        await in_thread(stop)
        await asyncio.sleep(away_s)
        await in_thread(start)
        return await wait_serving(suite, name, clock)

    return fault


def ledger_missing(suite: Suite, result: CaseResult, timeout_s: float = 30.0) -> int:
    """How many chats answered OK have no routing_requests row (waiting for the books to settle)."""
    answered = [o.correlation_id for o in result.outcomes if o.kind.startswith("chat") and 200 <= o.status < 300]

    async def missing() -> int:
        conn = await asyncpg.connect(suite.database_url)
        try:
            rows = await conn.fetch(
                "SELECT correlation_id FROM router.routing_requests WHERE correlation_id = ANY($1::text[])", answered
            )
        finally:
            await conn.close()
        return len(set(answered) - {r["correlation_id"] for r in rows})

    deadline = time.monotonic() + timeout_s
    while (left := asyncio.run(missing())) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@dataclass(frozen=True)
class Case:
    name: str
    broken: frozenset[str]
    fault: Callable[[Suite, Stores], Fault]
    duration_s: float = 12.0


CASES: list[Case] = [
    *(
        Case(f"SIGKILL {s}", frozenset({s}), lambda suite, _, s=s: signal_service(suite, s, signal.SIGKILL))
        for s in ("router", "auth", "inference", "rag", "executor")
    ),
    *(
        Case(f"SIGTERM {s}", frozenset({s}), lambda suite, _, s=s: signal_service(suite, s, signal.SIGTERM))
        for s in ("router", "auth", "inference", "rag", "executor", "gateway")
    ),
    Case(
        "PostgreSQL stopped 10 s",
        frozenset({"postgres"}),
        lambda suite, stores: store_away(suite, stores.stop_postgres, stores.start_postgres, "postgres", 10),
        duration_s=18,
    ),
    Case(
        "Redis stopped 10 s",
        frozenset({"redis"}),
        lambda suite, stores: store_away(suite, stores.stop_redis, stores.start_redis, "redis", 10),
        duration_s=18,
    ),
]


def run(suite: Suite, stores: Stores, case: Case) -> CaseResult:
    """One case under load, with what it lost from the books."""
    result = asyncio.run(
        run_case(
            suite,
            case.name,
            broken=case.broken,
            fault=case.fault(suite, stores),
            duration_s=case.duration_s,
            timeout_s=ROUTE_TIMEOUT_S,
        )
    )
    result.lost = ledger_missing(suite, result)
    return result


# -- disk full for GOBLIN_HOME (issue 19, case 7) ----------------------------------------------------
# The suite with its GOBLIN_HOME on a small filesystem of its own, filled under load and freed. On it:
# all of GOBLIN_HOME (TLS files, the admin key and the key-encryption key, the journals, the locks,
# RAG's Chroma and keyword index, the executor's work directories). Not on it: PostgreSQL and Redis
# (their own data directories, as a deployment's servers are) and the suite's log.
# The filesystem is a tmpfs in a mount namespace of the suite's own, by bubblewrap (as root, or as a
# user where unprivileged user namespaces are allowed) or ``unshare -m`` as root; this process reaches
# it through ``/proc/<pid>/root``. Nothing of the machine's own mounts is touched.

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
    """The first method that works here (tried with ``df``), or :class:`NoSmallFilesystem` naming what
    was tried."""
    tried = []
    for name, prefix in _small_fs_prefixes(directory, size):
        probe = subprocess.run([*prefix, "df", "-B1", "--output=size", str(directory)], capture_output=True, timeout=30)
        if probe.returncode == 0 and str(size) in probe.stdout.decode():
            return name, prefix
        tried.append(f"{name}: {probe.stderr.decode().strip()[:200] or probe.stdout.decode().strip()[:200]}")
    raise NoSmallFilesystem(
        "no way to mount a small filesystem here: " + ("; ".join(tried) or "neither bwrap nor root")
    )


class NoSmallFilesystem(RuntimeError):
    """Neither bubblewrap nor ``unshare -m`` (as root) can mount a small filesystem here."""


@dataclass
class SmallHome:
    """A running suite whose GOBLIN_HOME is a small filesystem of its own (:func:`small_home_suite`)."""

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


@contextmanager
def small_home_suite(base: Path, size: int = SMALL_FS_BYTES, *, embedded_stores: bool = False) -> Iterator[SmallHome]:
    """The whole suite, ready, with its GOBLIN_HOME a ``size``-byte tmpfs in a mount namespace of its own
    (:func:`small_fs_prefix`), its stores, log and catalog outside it, and the fake provider of
    :data:`CATALOG`; stopped afterwards. Raises :class:`NoSmallFilesystem` when no method works.
    ``embedded_stores``: no DATABASE_URL/REDIS_URL, so `goblin up` starts its embedded PostgreSQL and
    Redis in GOBLIN_HOME, on the small filesystem (a laptop's default)."""
    home = base / "home"  # inside the namespace: the small tmpfs; outside: an empty directory
    home.mkdir(parents=True)
    method, prefix = small_fs_prefix(home, size)
    stores = None if embedded_stores else Stores(base / "stores")
    urls = {} if stores is None else {"DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url}
    log_path = base / "suite.log"
    try:
        with FakeProviders() as fake:
            catalog = base / "catalog.yaml"
            catalog.write_text(CATALOG.format(port=fake.port))
            extra = {
                "GOBLIN_CATALOG_FILE": str(catalog),
                "ACME_API_KEY": fake.key("acme"),
                **urls,
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
            if stores is None:  # the embedded server's socket, reached through the namespace's root
                suite.env["DATABASE_URL"] = (
                    f"postgresql://postgres:@/goblin?host={quote(str(suite.home / 'pg'), safe='/')}"
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
        if stores is not None:
            stores.close()


def disk_full_fault(small: SmallHome, hold_s: float = 5.0) -> Fault:
    """GOBLIN_HOME filled to the last byte, and kept full (every byte freed is taken again) for
    ``hold_s``, then freed; the case's clock when the space is back."""

    async def fault(clock: Callable[[], float]) -> float:
        done = threading.Event()
        hog = asyncio.create_task(asyncio.to_thread(small.fill, done))
        await asyncio.sleep(hold_s)
        done.set()
        await hog
        await asyncio.to_thread(small.free)
        return clock()

    return fault


def run_disk_full(small: SmallHome, hold_s: float = 5.0) -> CaseResult:
    """The disk-full case under the mixed load, with what it lost from the books."""
    result = asyncio.run(
        run_case(
            small.suite,
            "GOBLIN_HOME full",
            broken=frozenset(),  # nothing may answer 503: a full disk must not take a route away
            fault=disk_full_fault(small, hold_s),
            duration_s=12,
            timeout_s=ROUTE_TIMEOUT_S,
        )
    )
    result.lost = ledger_missing(small.suite, result)
    return result
