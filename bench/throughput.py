"""Throughput: the highest open-loop rate each path holds, Goblin beside the direct path and LiteLLM's proxy.

A sweep of offered rates (50, 100, 200, 400, 800 requests/s, 20 s each) of the same non-streaming chat
completion (16 tokens, a fake OpenAI provider in its own process answering at once), against:

- direct: HTTP/1.1 POST to the fake provider (the floor, and the load generator's own ceiling);
- skeleton: bench/skeleton.py, Goblin's hops (HTTPS gateway -> gRPC router -> provider) doing nothing
  else, plaintext gRPC and no caller identity;
- secure-skeleton: the same with the security every Goblin hop must have (mutual TLS on the gRPC hop, a
  principal signed per request and verified): the highest rate these two hold is the floor under the
  goal for Goblin's own rate on this machine;
- goblin: the whole suite (``goblin up``), HTTPS POST /v1/chat/completions with an API key of the default
  tenant (scope chat), every feature on: auth, rate limits (checked, with limits above the sweep's
  rates), secret scanning, the budget, the ledger, metrics, JSON logs;
- litellm: LiteLLM's proxy from PyPI (bench/throughput_litellm.py: its own venv, 2 workers, a master key,
  the local cost map, nothing sent out) in front of the same fake provider, plain HTTP.

All run throughout; the steps alternate between them rate by rate (the order reversed on every other
rate) so the host's drift hits them alike. A target stops at its first failing rate: p99 >= 100 ms, any
error, or served < 95 % of offered. Latency is from each request's scheduled send time. The load
generator (bench/throughput_load.py: aiohttp on uvloop in ``--generators`` processes, samples merged)
shares the 2 cores with what it measures: its CPU per request is in the table, and its send lag says
when it, not the target, fell behind.

Output: a section of bench/RESULTS.md and bench/throughput.png (p50/p99 against offered rate); with
BENCH_NO_WRITE set, RESULTS.md is left alone and the plot goes to bench/.work/.

``--soak SECONDS --rate R``: Goblin alone at R requests/s for SECONDS, every suite process's memory sampled
every 10 s (bench/throughput_soak.py). ``--ceiling``: the load generator's own ceiling against the direct
path, one process and ``--generators`` (bench/throughput_ceiling.py).

Run: `make bench` (the sweep) or `python -m bench.throughput [--rates 50,100 --duration 5]`.
127.0.0.1 only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.results import write_section
from bench.router_bench import (
    FAKE_KEY,
    MESSAGES,
    MODEL,
    Skeleton,
    fake_base_url,
    skeleton_home,
    start_fake,
    start_skeletons,
)
from bench.throughput_litellm import LiteLLM
from bench.throughput_load import MIN_SERVED, P99_LIMIT_MS, Generator, Step, Target, failure
from bench.throughput_report import error_examples, holding_rates, sweep_plot, sweep_table
from goblin_tools.suite import Suite, free_ports, start_suite

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
RATES = (50, 100, 200, 400, 800)
DURATION_S = 20.0
GENERATORS = 2
WARM_UP = (20.0, 3.0)  # rate, seconds: every target once before the sweep, not recorded
SETTLE_S = 2.0  # between steps; after a failed one, until the target's queue has drained too
TARGETS = ("direct", "skeleton", "secure-skeleton", "goblin", "litellm")
# The throughput targets' names of router_bench's skeleton paths.
SKELETON_TARGETS = {"skeleton": "skeleton", "secure-skeleton": "secure skeleton"}
MAX_TOKENS = 16
# Limits far above any rate the sweep offers: the limiter still runs on every request (its Redis round
# trips are part of the cost measured), it never refuses one.
GENEROUS_LIMITS = {
    f"GOBLIN_RATE_LIMIT_{route_class}": "10000000/minute" for route_class in ("AUTH", "CHAT", "HEALTH", "DEFAULT")
}


@dataclass
class Endpoint:
    """A target and how to find every process that serves it (looked up afresh each time: PostgreSQL's
    backends come and go); their CPU is the target's CPU per request."""

    target: Target
    processes: Callable[[], list[psutil.Process]]

    def cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) so far of each serving process, by pid."""
        out = {}
        for process in self.processes():
            with suppress(psutil.Error):
                times = process.cpu_times()
                out[process.pid] = times.user + times.system
        return out

    def cpu_since(self, before: dict[int, float]) -> float:
        """CPU seconds the serving processes used since ``before`` (a process that ended meanwhile is left
        out; one that started meanwhile counts whole)."""
        return sum(max(0.0, now - before.get(pid, 0.0)) for pid, now in self.cpu().items())


def tree(process: psutil.Process) -> list[psutil.Process]:
    """``process`` and its descendants (none if it is gone)."""
    with suppress(psutil.Error):
        return [process, *process.children(recursive=True)]
    return []


def suite_processes(suite: Suite) -> list[psutil.Process]:
    """``goblin up``, its descendants, and the embedded PostgreSQL (pg_ctl detaches it: found by its data
    directory under the suite's home, then its backends)."""
    found = {process.pid: process for process in tree(psutil.Process(suite.process.pid))}
    home = str(suite.home)
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.pid not in found and any(home in part for part in cmdline):
            found.update((p.pid, p) for p in tree(process))
    return list(found.values())


def body(model: str, **extra: object) -> bytes:
    """The chat completion request every target gets, as JSON bytes (encoded once, not per request)."""
    return json.dumps({"model": model, "messages": MESSAGES, **extra}).encode()


def new_api_key(suite: Suite) -> str:
    """An API key of the admin's (default) tenant with the chat scope: what an application would use."""
    with suite.admin_client() as http:
        reply = http.post("/auth/api-keys", json={"name": "throughput bench", "scopes": ["chat"]})
    if reply.status_code != 201:
        raise RuntimeError(f"could not make an API key: HTTP {reply.status_code} {reply.text}")
    return reply.json()["key"]


@contextmanager
def fake_provider() -> Iterator[tuple[int, psutil.Process]]:
    port = free_ports(1)[0]
    fake = start_fake(port)
    try:
        yield port, psutil.Process(fake.pid)
    finally:
        fake.terminate()
        fake.wait(timeout=10)


@contextmanager
def goblin_suite(name: str, fake_port: int) -> Iterator[Suite]:
    home = WORK / name
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=fake_base_url(fake_port), **GENEROUS_LIMITS)
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


def direct_path(fake_port: int, fake: psutil.Process) -> Endpoint:
    target = Target(
        "direct",
        f"{fake_base_url(fake_port)}/chat/completions",
        body(MODEL, max_completion_tokens=MAX_TOKENS),
        {"Authorization": f"Bearer {FAKE_KEY}"},
    )
    return Endpoint(target, lambda: [fake])


def goblin_path(suite: Suite, fake: psutil.Process) -> Endpoint:
    target = Target(
        "goblin",
        f"{suite.gateway_url}/v1/chat/completions",
        body(f"openai/{MODEL}", max_tokens=MAX_TOKENS),
        {"Authorization": f"Bearer {new_api_key(suite)}"},
        ca_file=str(suite.ca_file),
    )
    return Endpoint(target, lambda: [*suite_processes(suite), fake])


@contextmanager
def skeletons(names: list[str], fake_port: int) -> Iterator[dict[str, Skeleton]]:
    """The skeleton targets among ``names``, running in front of the fake provider (their own home: the
    certificates and principal keys ``goblin up`` would issue), by target name; stopped afterwards."""
    wanted = tuple(SKELETON_TARGETS[name] for name in names if name in SKELETON_TARGETS)
    running = start_skeletons(skeleton_home(WORK / "skeleton"), fake_port, wanted) if wanted else {}
    try:
        yield {target: running[path] for target, path in SKELETON_TARGETS.items() if path in running}
    finally:
        for skeleton in running.values():
            skeleton.stop()


def skeleton_path(name: str, skeleton: Skeleton, fake: psutil.Process) -> Endpoint:
    """A skeleton as a target: the gateway's body of the goblin target, no key (it checks none); its CPU is
    its gateway's and router's and the fake provider's."""
    target = Target(
        name,
        skeleton.url,
        body(f"openai/{MODEL}", max_tokens=MAX_TOKENS),
        {},
        ca_file=str(skeleton.ca_file),
    )
    processes = list(skeleton.roles().values())
    return Endpoint(target, lambda: [*processes, fake])


def litellm_path(proxy: LiteLLM, fake: psutil.Process) -> Endpoint:
    target = Target(
        "litellm",
        f"{proxy.url}/v1/chat/completions",
        body(MODEL, max_tokens=MAX_TOKENS),
        {"Authorization": f"Bearer {proxy.master_key}"},
    )
    root = psutil.Process(proxy.process.pid)
    return Endpoint(target, lambda: [*tree(root), fake])


def warm_up(generator: Generator, paths: list[Endpoint]) -> None:
    """Every target once at a low rate (connections, caches, the workers' imports), not recorded. It must
    answer some; a target too slow for even this rate fails the sweep's first step instead."""
    rate, seconds = WARM_UP
    for path in paths:
        samples = generator.run(path.target, rate, seconds)
        if not samples.latencies_ms:
            raise RuntimeError(f"{path.target.name} answered nothing in its warm-up: {samples.examples}")
        if samples.errors:
            print(f"{path.target.name} warm-up: {samples.errors}", flush=True)


def sweep(generator: Generator, paths: list[Endpoint], rates: list[float], duration_s: float) -> list[Step]:
    """The rates in turn, every target still holding at each, alternating the order; a target leaves at its
    first failure."""
    alive = list(paths)
    steps: list[Step] = []
    for index, rate in enumerate(rates):
        for path in list(alive if index % 2 == 0 else reversed(alive)):
            before = path.cpu()
            samples = generator.run(path.target, rate, duration_s)
            step = Step.of(path.target.name, rate, duration_s, samples, path.cpu_since(before))
            steps.append(step)
            why = failure(step)
            print(
                f"{step.target:15} {rate:5.0f}/s served {step.served:6.1f}/s p50 {step.p50_ms:7.2f} ms "
                f"p99 {step.p99_ms:8.2f} ms errors {step.errors} gen {step.generator_cpu_ms:.2f} ms/req "
                f"lag p99 {step.send_lag_p99_ms:.1f} ms: {why or 'holds'}",
                flush=True,
            )
            for kind, example in step.error_kinds and step.error_examples:
                print(f"    {kind}: {example}", flush=True)
            if why is not None:
                alive.remove(path)
                wait_idle(path)
            time.sleep(SETTLE_S)
        if not alive:
            break
    return steps


def wait_idle(path: Endpoint, limit_s: float = 30.0) -> None:
    """After a failed step: wait (bounded) until the target's processes stop burning CPU, so its backlog
    does not land on the next target's step."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = path.cpu()
        time.sleep(1.0)
        if path.cpu_since(before) < 0.2:  # under a fifth of a core
            return


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def plot_path(name: str) -> Path:
    """Where a plot goes: bench/ normally, bench/.work/ on a trial run (BENCH_NO_WRITE)."""
    return (WORK if os.environ.get("BENCH_NO_WRITE") else BENCH) / name


def report(steps: list[Step], rates: list[float], duration_s: float, generators: int, loads: tuple[str, str]) -> str:
    held = holding_rates(steps)
    plot = sweep_plot(steps, plot_path("throughput.png"), "Non-streaming chat, fake provider: latency vs offered rate")
    direct_cpu = [s.generator_cpu_ms for s in steps if s.target == "direct" and s.generator_cpu_ms > 0]
    ceiling = f"{1000 / min(direct_cpu):.0f}" if direct_cpu else "?"
    ratio = ""
    if held.get("goblin") is not None and "litellm" in held:
        litellm = held["litellm"]
        ratio = (
            f" Goblin holds {held['goblin']:.0f}/s, LiteLLM's proxy {litellm:.0f}/s"
            + (f": **{held['goblin'] / litellm:.1f}x**." if litellm else ".")
            + " (A target that held the sweep's highest rate may hold more: that rate is a floor.)"
        )
    summary = ", ".join(f"{target} **{rate:.0f}/s**" for target, rate in held.items())
    bare = [name for name in SKELETON_TARGETS if name in held]
    if bare:
        floor = ", ".join(f"{name} {held[name]:.0f}/s" for name in bare)
        ratio += (
            f" The floor under Goblin's rate on this machine (its hops doing nothing else, the same load "
            f"generator): {floor}."
        )
    return f"""
Non-streaming chat completion ({MAX_TOKENS} tokens) of `{MODEL}` from a fake OpenAI provider in its own
process (instant answers). Open loop, offered rates {", ".join(f"{r:.0f}" for r in rates)} requests/s,
{duration_s:.0f} s each; the targets alternate rate by rate (order reversed every other rate) and a
target stops at its first failing rate (p99 >= {P99_LIMIT_MS:.0f} ms, any error, or served <
{MIN_SERVED:.0%} of offered). Latency from each request's scheduled send time. goblin: the whole suite,
HTTPS with an API key, every feature on (auth, rate limits checked with limits above these rates, secret
scanning, budget, ledger, metrics, JSON logs). skeleton: bench/skeleton.py, the same HTTPS -> gRPC ->
provider hops doing nothing else (plaintext gRPC, no caller identity); secure-skeleton: the same with mutual
TLS on the gRPC hop and a principal signed per request by the gateway's signer and verified, and admitted
once, by the router's interceptor (what every Goblin hop must have). litellm: LiteLLM's proxy (its own
venv, 2 workers, master key, local cost map), plain HTTP. The load generator (aiohttp on uvloop, {generators} processes,
samples merged) runs on the same 2 cores as everything it measures: its CPU per request is in the table;
one generator process, given a core of its own, would top out near {ceiling} requests/s on the direct
path (1000 / its CPU ms per request there); a send lag p99 above a few ms means the generator fell
behind. Target CPU is every process serving the path (goblin: the whole suite, embedded PostgreSQL and
Redis included, and the fake provider; a skeleton: its gateway, its router and the fake provider;
litellm: its workers and the fake provider). Load average (1, 5, 15 min) at the start {loads[0]}, at the end {loads[1]}.

Highest rate held: {summary}.{ratio}

{sweep_table(steps)}

{error_examples(steps)}

Plot: `bench/{plot.name}` (p99 solid, p50 dashed, x a failed step).
"""


def run_sweep(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    wanted = targets(args.targets)
    loads_start = load_average()
    with fake_provider() as (fake_port, fake), Generator(args.generators) as generator:
        # LiteLLM's workers import for tens of seconds: start them first, wait for them after the suite.
        proxy = LiteLLM.spawn(fake_base_url(fake_port), FAKE_KEY, MODEL) if "litellm" in wanted else None
        try:
            with (
                goblin_suite("throughput", fake_port) if "goblin" in wanted else _nothing() as suite,
                skeletons(wanted, fake_port) as bare,
            ):
                paths = {"direct": direct_path(fake_port, fake)}
                paths.update((name, skeleton_path(name, skeleton, fake)) for name, skeleton in bare.items())
                if suite is not None:
                    paths["goblin"] = goblin_path(suite, fake)
                if proxy is not None:
                    proxy.wait_ready(MODEL)
                    paths["litellm"] = litellm_path(proxy, fake)
                ordered = [paths[name] for name in TARGETS if name in wanted]
                warm_up(generator, ordered)
                steps = sweep(generator, ordered, rates, args.duration)
        finally:
            if proxy is not None:
                proxy.stop()
    body_text = report(steps, rates, args.duration, args.generators, (loads_start, load_average()))
    write_section("Throughput", body_text, "make bench (python -m bench.throughput)")
    print(body_text)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def targets(text: str) -> list[str]:
    """The targets a ``--targets`` value names (comma-separated)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES), help="offered rates, requests/s")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds per rate and target")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"a subset of {','.join(TARGETS)}")
    parser.add_argument("--generators", type=int, default=GENERATORS, help="load generator processes")
    parser.add_argument("--soak", type=float, default=0, help="soak Goblin alone for this many seconds")
    parser.add_argument("--rate", type=float, default=100, help="the soak's rate, requests/s")
    parser.add_argument("--sample-every", type=float, default=10, help="the soak's memory sampling period, s")
    parser.add_argument("--ceiling", action="store_true", help="measure the load generator's own ceiling instead")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.generators < 1 or args.rate <= 0 or args.soak < 0 or args.sample_every <= 0:
        parser.error("durations, rates and counts must be positive")
    unknown = set(targets(args.targets)) - set(TARGETS)
    if unknown or not targets(args.targets):
        parser.error(f"--targets: unknown {sorted(unknown)}: a subset of {','.join(TARGETS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    """The sweep (``make bench`` calls this with no arguments) or, with ``--soak``, the soak, or with
    ``--ceiling``, the load generator's ceiling."""
    args = parse(argv or [])
    if args.ceiling:
        from bench.throughput_ceiling import run_ceiling

        run_ceiling(args)
    elif args.soak:
        from bench.throughput_soak import run_soak

        run_soak(args)
    else:
        run_sweep(args)


if __name__ == "__main__":
    main(sys.argv[1:])
