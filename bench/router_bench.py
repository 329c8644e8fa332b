"""Router: the latency Goblin adds in front of a provider.

A fake OpenAI provider (goblin_tools/fakes/providers.py, in its own process) answers instantly. Four ways to
ask it the same chat completion, interleaved request by request in one open loop at a fixed rate so
that background load on this shared machine hits them alike, latency measured from each request's
scheduled send time:

- direct: HTTP/1.1 keep-alive POST to the fake provider (the floor);
- router: gRPC ``goblin.v1.Router/Chat`` straight to the router (the router's own share);
- gateway: the whole path, HTTPS POST /v1/chat/completions -> gateway -> router -> fake provider;
- skeleton: the same hops and transports with nothing on them (bench/skeleton.py): what the
  architecture costs on this machine before Goblin does any work;
- in-process skeleton: the skeleton's gateway calling the skeleton's router code in its own process,
  to price the gRPC hop between them;
- secure skeleton: the skeleton with what every Goblin hop must have (mutual TLS with the suite's
  certificates, a principal the gateway signs per request and the router verifies and admits once):
  the floor under Goblin's own work now that the security cannot be turned off;
- direct tools / gateway tools: the same request with a tool (a JSON-schema function the fake
  answers by calling), directly and through the whole path: what tools add to Goblin's share.

Added latency = gateway minus direct (goal: p50 < 2 ms, p99 < 6 ms on 2 cores); skeleton minus direct
is the part of it no code on the hops can remove. The load generator is
aiohttp on uvloop for both HTTP paths (the same client, so its own cost cancels out; httpx's TLS costs
the client about 1 ms more per request than aiohttp's) and grpc.aio for the router path.

Then, to say where the time goes, each path alone, one request at a time: CPU seconds per request of
every process on it (from /proc), in the same run. The router's own ``goblin_router_overhead_seconds``
histogram (its handling time minus time waiting on the provider) is reported too.

Streaming rows: the same chat completion streamed (SSE from the fake, which sends its 7 tokens at once)
directly, through the router's ``ChatStream`` and through the gateway, interleaved with the unary direct
and gateway requests in an open loop of their own: time to first token and per-token time, what Goblin
adds to the first beside what it adds to a unary answer in the same minutes, and CPU per streamed request
and per token of each process (a 7-token stream's CPU less a 1-token stream's, over the 6 tokens between).
Run: `make bench` or `python -m bench.router_bench`. 127.0.0.1 only; bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import psutil
import uvloop

from bench.results import median, percentile, write_section
from goblin.v1 import common_pb2, router_pb2_grpc
from goblin_tools.suite import ROOT, Suite, free_ports, start_suite
from services.common.context import CORRELATION_METADATA_KEY
from services.common.principal import (
    PRINCIPAL_METADATA_KEY,
    SIGNING_KEY_NAME,
    Principal,
    PrincipalSigner,
    ensure_principal_keys,
)
from services.common.tls import CA_FILE, issue_suite_certificates
from services.gateway.tls import CERT_FILE, KEY_FILE

WORK = Path(__file__).resolve().parent / ".work"
RATE = int(os.environ.get("BENCH_RATE", "100"))  # requests/s in total, a fifth each
DURATION_S = int(os.environ.get("BENCH_DURATION_S", "30"))
WARM_UP_S = 3
CPU_REQUESTS = 300  # per path, one at a time
FAKE_KEY = "test-key-openai"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
STREAM_MAX_TOKENS = 16  # the fake's answer is 7 words: a stream of 7 content chunks
MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the benchmark."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
                "required": ["word"],
            },
        },
    }
]


@dataclass(frozen=True)
class Streamed:
    """What a streamed request saw: when (perf_counter) its first token arrived, and how many came."""

    first_token: float
    tokens: int


@dataclass
class Streaming:
    """The streaming runs: latency to the end per run (the unary direct and gateway among them), each
    streamed request's (time to first token, tokens), and each streamed path's tokens, CPU per request and
    CPU per token by process."""

    runs: dict[str, list[list[float]]]
    streamed: dict[str, list[tuple[float, float, int]]]
    cpu: dict[str, tuple[int, dict[str, float], dict[str, float]]]


def wait_listening(process: subprocess.Popen[bytes], port: int, what: str) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not start")


def start_process(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_fake(port: int) -> subprocess.Popen[bytes]:
    return wait_listening(start_process("goblin_tools.fakes.providers", "--port", str(port)), port, "the fake provider")


def fake_base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/openai/v1"


@dataclass
class Skeleton:
    """One of bench/skeleton.py's paths, running: its processes by role (``gateway``; ``router`` unless the
    router is in the gateway's process), its gateway's HTTPS port, the CA file its certificate chains to,
    and its router's gRPC port (0: in-process)."""

    port: int
    processes: dict[str, subprocess.Popen[bytes]]
    ca_file: Path
    router_port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/chat/completions"

    def roles(self) -> dict[str, psutil.Process]:
        """Its processes by role, for CPU accounting."""
        return {role: psutil.Process(process.pid) for role, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


SKELETONS = ("skeleton", "in-process skeleton", "secure skeleton")


def start_skeletons(home: Path, fake_port: int, names: tuple[str, ...] = SKELETONS) -> dict[str, Skeleton]:
    """bench/skeleton.py's paths named in ``names`` (of :data:`SKELETONS`) in front of the fake provider,
    with the certificates and principal keys ``goblin up`` issued under ``home/tls/`` (a suite's home, or
    one :func:`skeleton_home` made): the gateways serve HTTPS with its certificate, the secure skeleton's
    gRPC hop uses its CA, service certificates and principal key pair. Stops what it started if one fails."""
    tls_dir = home / "tls"
    tls = [str(tls_dir / CERT_FILE), str(tls_dir / KEY_FILE)]
    ca_file = tls_dir / CA_FILE
    provider = [fake_base_url(fake_port), FAKE_KEY]
    # The secure roles find everything by GOBLIN_HOME; nothing else of the caller's GOBLIN_* may redirect them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOBLIN_")}
    spawned: list[subprocess.Popen[bytes]] = []

    def launch(role: str, port: int, *args: str) -> subprocess.Popen[bytes]:
        spawned.append(start_process("bench.skeleton", role, str(port), *args, env=env))
        return wait_listening(spawned[-1], port, f"skeleton {role}")

    started: dict[str, Skeleton] = {}
    try:
        for name in names:
            gateway_port, router_port = free_ports(2)
            router_address = f"127.0.0.1:{router_port}"
            if name == "skeleton":
                router = launch("router", router_port, *provider)
                gateway = launch("gateway", gateway_port, router_address, *tls)
                started[name] = Skeleton(gateway_port, {"router": router, "gateway": gateway}, ca_file, router_port)
            elif name == "in-process skeleton":
                gateway = launch("gateway-in-process", gateway_port, *provider, *tls)
                started[name] = Skeleton(gateway_port, {"gateway": gateway}, ca_file)
            elif name == "secure skeleton":
                router = launch("router-secure", router_port, *provider, str(home))
                gateway = launch("gateway-secure", gateway_port, router_address, *tls, str(home))
                started[name] = Skeleton(gateway_port, {"router": router, "gateway": gateway}, ca_file, router_port)
            else:
                raise ValueError(f"unknown skeleton {name!r}: one of {', '.join(SKELETONS)}")
    except (RuntimeError, ValueError):
        for process in spawned:
            process.kill()
            process.wait()
        raise
    return started


def skeleton_home(home: Path) -> Path:
    """A fresh ``home`` with what ``goblin up`` issues before it starts anything (the suite CA, every
    service's certificate, the HTTPS certificate, the principal key pair), for skeletons without a suite."""
    shutil.rmtree(home, ignore_errors=True)
    issue_suite_certificates(home / "tls")
    ensure_principal_keys(home / "tls")
    return home


def overhead_quantiles(suite: Suite) -> tuple[float, float, int]:
    """p50 and p99 (upper bucket bounds, ms) of goblin_router_overhead_seconds{operation="chat"}."""
    text = httpx.get(suite.metrics_url("router"), timeout=5).text
    buckets = []
    for line in text.splitlines():
        match = re.match(r'goblin_router_overhead_seconds_bucket\{le="([^"]+)",operation="chat"\} (\S+)', line)
        if match:
            buckets.append((float(match.group(1)), float(match.group(2))))
    if not buckets or not buckets[-1][1]:
        return float("nan"), float("nan"), 0
    total = buckets[-1][1]

    def quantile(q: float) -> float:
        return next(le for le, count in buckets if count >= q * total) * 1000

    return quantile(0.5), quantile(0.99), int(total)


async def interleaved_load(
    variants: dict[str, Callable[[], Awaitable[Streamed | None]]],
    rate: float,
    duration_s: float,
    streamed: dict[str, list[tuple[float, float, int]]] | None = None,
) -> dict[str, list[float]]:
    """Open loop: slot i goes to variant i % n; latency from the slot's scheduled time (ms). A streamed
    variant returns when its first token came and how many: ``streamed`` gets (time to first token and to
    the end, both from the scheduled time in ms, tokens) for each of its requests."""
    names = list(variants)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    failures: dict[str, int] = {name: 0 for name in names}
    started = time.perf_counter()
    total = int(rate * duration_s)

    async def one(name: str, scheduled: float) -> None:
        try:
            outcome = await variants[name]()
        except Exception:
            failures[name] += 1
            return
        latency = (time.perf_counter() - scheduled) * 1000
        latencies[name].append(latency)
        if outcome is not None and streamed is not None:
            first = (outcome.first_token - scheduled) * 1000
            streamed.setdefault(name, []).append((first, latency, outcome.tokens))

    tasks = []
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(names[i % len(names)], scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration_s * 3 + 30)
    if any(failures.values()):
        raise RuntimeError(f"failed requests: {failures}")
    return latencies


async def measure(
    suite: Suite,
    fake: subprocess.Popen[bytes],
    fake_port: int,
    skeletons: dict[str, Skeleton],
) -> tuple[dict, dict, Streaming]:
    """The interleaved open-loop runs, then each path's CPU per request; then the same for streaming."""
    direct_body = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 16}
    gateway_body = {"model": f"openai/{MODEL}", "messages": MESSAGES, "max_tokens": 16}
    direct_tools_body = {**direct_body, "tools": TOOLS}
    gateway_tools_body = {**gateway_body, "tools": TOOLS}
    request = common_pb2.ChatRequest(
        model=f"openai/{MODEL}",
        messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES],
        params=common_pb2.SamplingParams(max_tokens=16),
    )
    # Who asks travels signed, as the gateway signs it; a fresh assertion per call (one is never reused).
    signer = PrincipalSigner.from_pem((suite.home / "tls" / SIGNING_KEY_NAME).read_bytes())
    bench_caller = Principal(user_id="bench", tenant_id="default")
    direct_url = f"{fake_base_url(fake_port)}/chat/completions"
    direct_headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    gateway_url = f"{suite.gateway_url}/v1/chat/completions"
    gateway_headers = {"Authorization": f"Bearer {suite.admin_key}"}
    connector = aiohttp.TCPConnector(ssl=suite.ssl_context(), limit=32)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        suite.grpc_aio_channel("router") as channel,
    ):
        router = router_pb2_grpc.RouterStub(channel)

        async def post(url: str, body: dict, headers: dict[str, str]) -> None:
            async with http.post(url, json=body, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"{url}: HTTP {reply.status}")

        async def via_direct() -> None:
            await post(direct_url, direct_body, direct_headers)

        async def via_router() -> None:
            metadata = ((CORRELATION_METADATA_KEY, "bench"), (PRINCIPAL_METADATA_KEY, signer.sign(bench_caller)))
            await router.Chat(request, metadata=metadata, timeout=10)

        async def via_gateway() -> None:
            await post(gateway_url, gateway_body, gateway_headers)

        def via(skeleton: Skeleton) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                await post(skeleton.url, gateway_body, {})

            return call

        async def via_direct_tools() -> None:
            await post(direct_url, direct_tools_body, direct_headers)

        async def via_gateway_tools() -> None:
            await post(gateway_url, gateway_tools_body, gateway_headers)

        async def sse(url: str, body: dict, headers: dict[str, str]) -> Streamed:
            """POST a streamed chat completion and read its SSE to the end, noting the first token."""
            first, tokens = 0.0, 0
            async with http.post(url, json=body, headers=headers) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"{url}: HTTP {reply.status}")
                async for line in reply.content:
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        tokens += 1
                        first = first or time.perf_counter()
            if not tokens:
                raise RuntimeError(f"{url}: a stream without tokens")
            return Streamed(first, tokens)

        def streams(max_tokens: int) -> dict[str, Callable[[], Awaitable[Streamed]]]:
            """The streamed paths (direct, router, gateway), each answering ``max_tokens`` tokens at most."""
            direct_stream = {**direct_body, "max_completion_tokens": max_tokens, "stream": True}
            gateway_stream = {**gateway_body, "max_tokens": max_tokens, "stream": True}
            stream_request = common_pb2.ChatRequest()
            stream_request.CopyFrom(request)
            stream_request.params.max_tokens = max_tokens

            async def via_direct_stream() -> Streamed:
                return await sse(direct_url, direct_stream, direct_headers)

            async def via_router_stream() -> Streamed:
                metadata = ((CORRELATION_METADATA_KEY, "bench"), (PRINCIPAL_METADATA_KEY, signer.sign(bench_caller)))
                first, tokens = 0.0, 0
                async for chunk in router.ChatStream(stream_request, metadata=metadata, timeout=10):
                    if chunk.delta:
                        tokens += 1
                        first = first or time.perf_counter()
                if not tokens:
                    raise RuntimeError("router: a stream without tokens")
                return Streamed(first, tokens)

            async def via_gateway_stream() -> Streamed:
                return await sse(gateway_url, gateway_stream, gateway_headers)

            return {
                "direct stream": via_direct_stream,
                "router stream": via_router_stream,
                "gateway stream": via_gateway_stream,
            }

        variants = {
            "direct": via_direct,
            "router": via_router,
            "gateway": via_gateway,
            **{name: via(skeleton) for name, skeleton in skeletons.items()},
            "direct tools": via_direct_tools,
            "gateway tools": via_gateway_tools,
        }
        await interleaved_load(variants, RATE, WARM_UP_S)
        runs: dict[str, list[list[float]]] = {name: [] for name in variants}
        for _ in range(RUNS):
            for name, values in (await interleaved_load(variants, RATE, DURATION_S)).items():
                runs[name].append(values)
        goblin = {
            "fake provider": psutil.Process(fake.pid),
            "router": suite.service_process("router"),
            "gateway": suite.service_process("gateway"),
        }
        # A skeleton's own processes in the gateway and router columns; the in-process one has no router of
        # its own, so its router column is the plain skeleton's (idle meanwhile).
        bare = {**goblin, **skeletons["skeleton"].roles()}
        processes = {name: {**bare, **skeleton.roles()} for name, skeleton in skeletons.items()}
        cpu = {name: await cpu_per_request(fn, processes.get(name, goblin)) for name, fn in variants.items()}
        # Streaming: its own interleaved loop beside the unary direct and gateway requests, so the time to
        # first token Goblin adds can be set against the unary overhead of the same minutes.
        stream_variants = {"direct": via_direct, "gateway": via_gateway, **streams(STREAM_MAX_TOKENS)}
        await interleaved_load(stream_variants, RATE, WARM_UP_S)
        stream_runs: dict[str, list[list[float]]] = {name: [] for name in stream_variants}
        streamed: dict[str, list[tuple[float, float, int]]] = {}
        for _ in range(RUNS):
            for name, values in (await interleaved_load(stream_variants, RATE, DURATION_S, streamed)).items():
                stream_runs[name].append(values)
        # CPU per token: a full stream's CPU less a one-token stream's, over the tokens between them.
        full, one = streams(STREAM_MAX_TOKENS), streams(1)
        stream_cpu = {}
        for name in full:
            tokens = (await full[name]()).tokens
            whole = await cpu_per_request(full[name], goblin)
            single = await cpu_per_request(one[name], goblin)
            per_token = {p: (whole[p] - single[p]) / max(1, tokens - 1) for p in whole}
            stream_cpu[name] = (tokens, whole, per_token)
    return runs, cpu, Streaming(stream_runs, streamed, stream_cpu)


async def cpu_per_request(
    call: Callable[[], Awaitable[None]], processes: dict[str, psutil.Process]
) -> dict[str, float]:
    """Milliseconds of CPU (user + system) per request of each process, requests sent one at a time."""

    def used() -> dict[str, float]:
        times = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        mine = os.times()
        return {**times, "load generator": mine.user + mine.system}

    for _ in range(20):
        await call()
    before = used()
    for _ in range(CPU_REQUESTS):
        await call()
    after = used()
    return {name: (after[name] - before[name]) * 1000 / CPU_REQUESTS for name in before}


def main() -> None:
    fake_port = free_ports(1)[0]
    fake = start_fake(fake_port)
    home = WORK / "router"
    shutil.rmtree(home, ignore_errors=True)
    generous = {f"GOBLIN_RATE_LIMIT_{c}": "1000000/minute" for c in ("AUTH", "CHAT", "HEALTH", "DEFAULT")}
    suite = start_suite(home, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=fake_base_url(fake_port), **generous)
    try:
        suite.wait_ready()
        skeletons = start_skeletons(suite.home, fake_port)
        try:
            runs, cpu, streaming = uvloop.run(measure(suite, fake, fake_port, skeletons))
        finally:
            for skeleton in skeletons.values():
                skeleton.stop()
        own_p50, own_p99, own_n = overhead_quantiles(suite)
    finally:
        suite.stop()
        fake.terminate()
        fake.wait(timeout=10)

    def stats(name: str) -> tuple[float, float, int]:
        return (
            median([median(r) for r in runs[name]]),
            median([percentile(r, 99) for r in runs[name]]),
            sum(len(r) for r in runs[name]),
        )

    direct, router, gateway, skeleton = stats("direct"), stats("router"), stats("gateway"), stats("skeleton")
    in_process, secure = stats("in-process skeleton"), stats("secure skeleton")
    direct_tools, gateway_tools = stats("direct tools"), stats("gateway tools")
    labels = {
        "direct": "direct: client -> fake provider",
        "router": "router: gRPC Router/Chat -> router -> fake provider",
        "gateway": "gateway: HTTPS -> gateway -> router -> fake provider",
        "skeleton": "skeleton: the same hops doing nothing else",
        "in-process skeleton": "in-process skeleton: the skeleton without its gRPC hop",
        "secure skeleton": "secure skeleton: the skeleton with mutual TLS and a signed principal on its gRPC hop",
        "direct tools": "direct tools: client -> fake provider, with a tool",
        "gateway tools": "gateway tools: HTTPS -> gateway -> router -> fake provider, with a tool",
    }
    rows = {name: stats(name) for name in labels}
    latency_table = "\n".join(
        f"| {labels[name]} | {n} | {p50:.2f} ms | {p99:.2f} ms |" for name, (p50, p99, n) in rows.items()
    )
    columns = ["load generator", "gateway", "router", "fake provider"]
    cpu_table = "\n".join(
        [
            "| path | " + " | ".join(columns) + " |",
            "| --- |" + " --- |" * len(columns),
            *(f"| {name} | " + " | ".join(f"{cpu[name][c]:.2f}" for c in columns) + " |" for name in cpu),
        ]
    )
    added_p50, added_p99 = gateway[0] - direct[0], gateway[1] - direct[1]
    gw, rt = cpu["gateway"]["gateway"], cpu["gateway"]["router"]
    secure_cpu, bare_cpu = cpu["secure skeleton"], cpu["skeleton"]
    verdict = "met" if added_p50 < 2 and added_p99 < 6 else "not met"
    body = f"""
Non-streaming chat completion (16 tokens) of `openai/{MODEL}` from a fake OpenAI provider in its own
process. Open loop at {RATE} requests/s in total, the {len(labels)} paths interleaved request by request
({RATE / len(labels):.0f}/s each), {RUNS} runs of {DURATION_S} s after a {WARM_UP_S} s warm-up; latency from each
request's scheduled send time; medians over the runs of each run's p50 and p99. Load generator
(aiohttp + grpc.aio on one uvloop loop) on the same 2 cores as the suite. The router reaches the
provider over HTTP/1.1 keep-alive (aiohttp's transport under httpx; HTTP/2 is for `https://` providers).

| path | requests | p50 | p99 |
| --- | --- | --- | --- |
{latency_table}

Added by Goblin (gateway - direct): p50 **{added_p50:+.2f} ms**, p99 **{added_p99:+.2f} ms**
(goal p50 < 2 ms, p99 < 6 ms: **{verdict}**). The skeleton's hops alone add p50
{skeleton[0] - direct[0]:+.2f} ms, p99 {skeleton[1] - direct[1]:+.2f} ms; Goblin's own work on them
(gateway - skeleton) p50 {gateway[0] - skeleton[0]:+.2f} ms, p99 {gateway[1] - skeleton[1]:+.2f} ms.
The gRPC hop between gateway and router (skeleton - in-process skeleton): p50
{skeleton[0] - in_process[0]:+.2f} ms, p99 {skeleton[1] - in_process[1]:+.2f} ms.
With the security every Goblin hop must have (the secure skeleton: mutual TLS with the suite's
certificates on the gRPC hop, a principal signed per request by the gateway's signer and verified, and
admitted once, by the router's interceptor), the bare hops add (secure skeleton - direct) \
p50 {secure[0] - direct[0]:+.2f} ms, p99 {secure[1] - direct[1]:+.2f} ms, of which the security \
(secure skeleton - skeleton) p50 {secure[0] - skeleton[0]:+.2f} ms, p99 {secure[1] - skeleton[1]:+.2f} ms;
Goblin's own work over the secure skeleton (gateway - secure skeleton) \
p50 **{gateway[0] - secure[0]:+.2f} ms**, p99 **{gateway[1] - secure[1]:+.2f} ms**.
With a tool (one JSON-schema function; the fake answers with a call of it), Goblin adds
(gateway tools - direct tools) p50 {gateway_tools[0] - direct_tools[0]:+.2f} ms,
p99 {gateway_tools[1] - direct_tools[1]:+.2f} ms.
The router's share (router - direct): p50 {router[0] - direct[0]:+.2f} ms,
p99 {router[1] - direct[1]:+.2f} ms. The router's own accounting
(`goblin_router_overhead_seconds`, handling time minus time waiting on the provider, {own_n} requests,
bucket upper bounds): p50 <= {own_p50:.2f} ms, p99 <= {own_p99:.2f} ms.

Where the time goes: CPU per request (ms) of each process on each path, the paths measured one after
another, {CPU_REQUESTS} requests each sent one at a time (a busy, warm machine: an idle gap before each
request roughly doubles these on this VM, as caches go cold). On the skeleton rows the gateway and router
columns are the skeleton's processes (in-process: the router's work is in the gateway column):

{cpu_table}

CPU per request over the secure skeleton's (Goblin's own work with the mandatory security priced in):
gateway {gw:.2f} ms against {secure_cpu["gateway"]:.2f} ms ({gw - secure_cpu["gateway"]:+.2f} ms), router \
{rt:.2f} ms against {secure_cpu["router"]:.2f} ms ({rt - secure_cpu["router"]:+.2f} ms); the security's own
cost on the bare hop (secure skeleton - skeleton): gateway {secure_cpu["gateway"] - bare_cpu["gateway"]:+.2f} ms,
router {secure_cpu["router"] - bare_cpu["router"]:+.2f} ms.
"""
    body += streaming_report(streaming, columns)
    write_section("Router", body, "make bench (python -m bench.router_bench)")
    print(body)


def streaming_report(streaming: Streaming, columns: list[str]) -> str:
    """The streaming rows: time to first token and per-token time of each streamed path, what Goblin adds
    to them beside its unary overhead in the same minutes, and CPU per request and per token."""

    def over_runs(name: str) -> tuple[float, float]:
        return median([median(r) for r in streaming.runs[name]]), median(
            [percentile(r, 99) for r in streaming.runs[name]]
        )

    def stream_stats(name: str) -> tuple[float, float, float, int]:
        rows = streaming.streamed.get(name, [])
        firsts = [first for first, _, _ in rows]
        per_token = [(total - first) / (tokens - 1) for first, total, tokens in rows if tokens > 1]
        return median(firsts), percentile(firsts, 99), median(per_token), len(rows)

    labels = {
        "direct stream": "direct: client -> fake provider",
        "router stream": "router: gRPC Router/ChatStream -> router -> fake provider",
        "gateway stream": "gateway: HTTPS SSE -> gateway -> router -> fake provider",
    }
    stats = {name: stream_stats(name) for name in labels}
    table = "\n".join(
        f"| {labels[name]} | {n} | {ttft50:.2f} ms | {ttft99:.2f} ms | {over_runs(name)[0]:.2f} ms | {tok:.3f} ms |"
        for name, (ttft50, ttft99, tok, n) in stats.items()
    )
    unary_p50 = over_runs("gateway")[0] - over_runs("direct")[0]
    unary_p99 = over_runs("gateway")[1] - over_runs("direct")[1]
    ttft_p50 = stats["gateway stream"][0] - stats["direct stream"][0]
    ttft_p99 = stats["gateway stream"][1] - stats["direct stream"][1]
    token_added = stats["gateway stream"][2] - stats["direct stream"][2]
    verdict = "met" if ttft_p50 <= unary_p50 and ttft_p99 <= unary_p99 else "not met"
    tokens = {name: streaming.cpu[name][0] for name in streaming.cpu}
    cpu_rows = []
    for name, (count, whole, per_token) in streaming.cpu.items():
        cpu_rows.append(
            f"| {name}, per request ({count} tokens) | " + " | ".join(f"{whole[c]:.2f}" for c in columns) + " |"
        )
        cpu_rows.append(f"| {name}, per token | " + " | ".join(f"{per_token[c]:.3f}" for c in columns) + " |")
    cpu_table = "\n".join(["| path | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns), *cpu_rows])
    return f"""
Streaming (SSE from the fake provider; {max(tokens.values(), default=0)} content chunks, sent at once): the
three streamed paths interleaved with the unary direct and gateway requests in an open loop of their own,
same rate, runs and warm-up as above. Time to first token from the scheduled send; per-token time =
(end - first token) / (tokens - 1), medians over requests.

| path | requests | TTFT p50 | TTFT p99 | end p50 | per token p50 |
| --- | --- | --- | --- | --- | --- |
{table}

Time to first token added by Goblin (gateway stream - direct stream): p50 **{ttft_p50:+.2f} ms**, p99
**{ttft_p99:+.2f} ms**; the unary overhead in the same loop (gateway - direct): p50 {unary_p50:+.2f} ms,
p99 {unary_p99:+.2f} ms (goal: TTFT added <= the unary overhead: **{verdict}**). Per-token time added:
{token_added:+.3f} ms.

CPU (ms) per streamed request and per token of each process (per token: a full stream's CPU less a
one-token stream's, over the tokens between them; {CPU_REQUESTS} requests each, one at a time):

{cpu_table}
"""


if __name__ == "__main__":
    main()
