"""A small open-loop load generator: requests at a fixed rate, latency from each one's scheduled time.

Measuring from the scheduled time (not from when the request was actually sent) keeps a slow server
from hiding its queueing ("coordinated omission"). Bounded by count and by a wall-clock limit; it
only talks to the URL it is given (127.0.0.1 in every benchmark here).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from bench.results import median, percentile


@dataclass
class LoadResult:
    sent: int
    ok: int
    errors: int
    status_counts: dict[int, int]
    latencies_ms: list[float]
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def p50(self) -> float:
        return median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


async def run_load(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    rate: float,
    duration_s: float,
    json: object | None = None,
    headers: dict[str, str] | None = None,
    max_in_flight: int = 256,
) -> LoadResult:
    total = int(rate * duration_s)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    in_flight = asyncio.Semaphore(max_in_flight)
    started = time.perf_counter()
    hard_stop = started + duration_s * 3 + 10

    async def one(scheduled: float) -> None:
        nonlocal errors
        async with in_flight:
            try:
                reply = await client.request(method, url, json=json, headers=headers)
                await reply.aread()
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks = []
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() > hard_stop:
            break
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, hard_stop - time.perf_counter()))
    elapsed = time.perf_counter() - started
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return LoadResult(len(tasks), ok, errors, statuses, latencies, elapsed)
