"""The throughput sweep's load generator: open loop, in several processes, samples merged.

One process of aiohttp on uvloop costs a fraction of a millisecond of CPU per request (more over TLS),
and on this 2-core machine it shares the cores with what it measures; so a step's schedule is split
across ``generators`` worker processes, each sending every n-th request of one global schedule (worker i
at ``start + i/rate + k*n/rate``), and their samples are merged. Latency is measured from each
request's scheduled time (no coordinated omission), and each worker records how late it actually sent
(send lag): when that grows the generator, not the target, is what fell behind.

Bounded in count (``rate * duration`` requests) and in time (the step ends ``timeout_s`` after its last
scheduled send; what is still running then counts as an error). It only sends to the URL it is given
(127.0.0.1 in every benchmark here).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import ssl
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from bench.results import median, percentile

P99_LIMIT_MS = 100.0
MIN_SERVED = 0.95  # of the offered rate


@dataclass(frozen=True)
class Target:
    """One endpoint to load: a POST of ``body`` (JSON bytes) with ``headers``; ``ca_file`` for HTTPS."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    ca_file: str | None = None


@dataclass(frozen=True)
class Plan:
    """One worker's share of one step."""

    target: Target
    rate: float  # of the whole step, all workers together
    duration_s: float
    start_at: float  # wall clock (time.time()) at which the step's schedule starts
    worker: int
    workers: int
    timeout_s: float = 10.0
    connections: int = 256


@dataclass
class Samples:
    """What one worker (or, merged, a whole step) saw."""

    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    send_lag_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    last_done_s: float = 0.0  # when the last request finished, from the schedule's start
    examples: dict[str, str] = field(default_factory=dict)  # an error of each kind, the start of its body

    def merge(self, other: Samples) -> Samples:
        errors = dict(self.errors)
        for kind, count in other.errors.items():
            errors[kind] = errors.get(kind, 0) + count
        return Samples(
            sent=self.sent + other.sent,
            latencies_ms=self.latencies_ms + other.latencies_ms,
            errors=errors,
            send_lag_ms=self.send_lag_ms + other.send_lag_ms,
            cpu_s=self.cpu_s + other.cpu_s,
            last_done_s=max(self.last_done_s, other.last_done_s),
            examples={**other.examples, **self.examples},
        )


@dataclass(frozen=True)
class Step:
    """One target at one offered rate, summarised."""

    target: str
    offered: float
    duration_s: float
    sent: int
    ok: int
    errors: int
    served: float  # successful answers per second, over the schedule or until the last answer if later
    p50_ms: float
    p99_ms: float
    generator_cpu_ms: float  # the load generator's CPU per request sent, all its processes
    send_lag_p99_ms: float
    target_cpu_ms: float = float("nan")  # the target's processes' CPU per request sent
    error_kinds: tuple[tuple[str, int], ...] = ()
    error_examples: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, target: str, offered: float, duration_s: float, samples: Samples, target_cpu_s: float) -> Step:
        ok = len(samples.latencies_ms)
        errors = sum(samples.errors.values())
        sent = max(samples.sent, 1)
        return cls(
            target=target,
            offered=offered,
            duration_s=duration_s,
            sent=samples.sent,
            ok=ok,
            errors=errors,
            served=ok / max(duration_s, samples.last_done_s) if duration_s else 0.0,
            p50_ms=median(samples.latencies_ms),
            p99_ms=percentile(samples.latencies_ms, 99),
            generator_cpu_ms=samples.cpu_s * 1000 / sent,
            send_lag_p99_ms=percentile(samples.send_lag_ms, 99),
            target_cpu_ms=target_cpu_s * 1000 / sent,
            error_kinds=tuple(sorted(samples.errors.items())),
            error_examples=tuple(sorted(samples.examples.items())),
        )


def failure(step: Step, p99_limit_ms: float = P99_LIMIT_MS, min_served: float = MIN_SERVED) -> str | None:
    """Why ``step`` fails the sweep's rule (p99 >= the limit, any error, or served < 95 % of offered), or
    None if it holds."""
    if step.errors:
        return f"{step.errors} errors"
    if not step.ok or step.p99_ms != step.p99_ms:  # nothing answered (NaN p99)
        return "no answers"
    if step.p99_ms >= p99_limit_ms:
        return f"p99 {step.p99_ms:.0f} ms >= {p99_limit_ms:.0f} ms"
    if step.served < min_served * step.offered:
        return f"served {step.served:.0f}/s < {min_served:.0%} of {step.offered:.0f}/s"
    return None


def highest_holding(steps: list[Step]) -> float:
    """The highest offered rate whose step held (0 if none did): the sweep stops at the first failure."""
    held = 0.0
    for step in sorted(steps, key=lambda s: s.offered):
        if failure(step) is not None:
            break
        held = step.offered
    return held


def run_worker(plan: Plan) -> Samples:
    """One worker process's share of a step (the pool calls this; it runs its own uvloop loop)."""
    import uvloop

    return uvloop.run(_worker(plan))


async def _worker(plan: Plan) -> Samples:
    import aiohttp

    context: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=plan.target.ca_file) if plan.target.ca_file else False
    )
    connector = aiohttp.TCPConnector(ssl=context, limit=plan.connections)
    timeout = aiohttp.ClientTimeout(total=plan.timeout_s)
    headers = {"Content-Type": "application/json", **plan.target.headers}
    samples = Samples()
    interval = plan.workers / plan.rate
    total = int(plan.rate * plan.duration_s)
    mine = len(range(plan.worker, total, plan.workers))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # The wall-clock start, as this process's perf_counter: every worker shares one schedule.
        start = time.perf_counter() + (plan.start_at - time.time())

        def error(kind: str, example: str) -> None:
            samples.errors[kind] = samples.errors.get(kind, 0) + 1
            samples.examples.setdefault(kind, example)

        async def one(scheduled: float) -> None:
            try:
                async with http.post(plan.target.url, data=plan.target.body, headers=headers) as reply:
                    answer = await reply.read()
                    status = reply.status
            except TimeoutError:
                error("TimeoutError", f"no answer within {plan.timeout_s:g} s")
                return
            except (aiohttp.ClientError, OSError) as exc:
                error(type(exc).__name__, repr(exc))
                return
            done = time.perf_counter()
            if status != 200:
                error(f"HTTP {status}", answer[:300].decode("utf-8", "replace"))
                return
            samples.latencies_ms.append((done - scheduled) * 1000)
            samples.last_done_s = max(samples.last_done_s, done - start)

        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        tasks = []
        for k in range(mine):
            scheduled = start + plan.worker / plan.rate + k * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            samples.send_lag_ms.append(max(0.0, time.perf_counter() - scheduled) * 1000)
            tasks.append(asyncio.create_task(one(scheduled)))
        samples.sent = len(tasks)
        if tasks:
            left = max(0.0, start + plan.duration_s - time.perf_counter())
            _, pending = await asyncio.wait(tasks, timeout=left + plan.timeout_s + 1)
            for task in pending:
                task.cancel()
            if pending:
                samples.errors["unfinished"] = samples.errors.get("unfinished", 0) + len(pending)
                await asyncio.wait(pending)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        samples.cpu_s = usage.ru_utime + usage.ru_stime - cpu_before
    return samples


class Generator:
    """A pool of ``workers`` load-generator processes, started once and reused for every step."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def start(self, target: Target, rate: float, duration_s: float, *, lead_s: float = 1.0) -> list[Future[Samples]]:
        """Start one step: ``rate`` requests/s for ``duration_s`` against ``target``, split over the
        workers, beginning ``lead_s`` from now; :meth:`collect` its futures."""
        start_at = time.time() + lead_s
        plans = [Plan(target, rate, duration_s, start_at, i, self.workers) for i in range(self.workers)]
        return [self.pool.submit(run_worker, plan) for plan in plans]

    @staticmethod
    def collect(futures: list[Future[Samples]]) -> Samples:
        """The step's samples, merged over its workers."""
        merged = Samples()
        for future in futures:
            merged = merged.merge(future.result())
        return merged

    def run(self, target: Target, rate: float, duration_s: float) -> Samples:
        """One whole step (see :meth:`start`)."""
        return self.collect(self.start(target, rate, duration_s))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
