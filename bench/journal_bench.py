"""What the write-ahead journal costs the request that books a row: ``BatchWriter.add`` of a routing
ledger row with the journal (one JSON line appended to a local file) and without (the in-memory queue
only), in-process, the two taking turns so machine noise hits both alike. The background write to
Postgres is off the request path in both and is not measured here. Run: ``python -m bench.journal_bench``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.results import median, percentile, write_section
from services.common import batch
from services.common.batch import BatchWriter
from services.common.journal import Journal
from services.common.process import usable_cores
from services.router.ledger import INSERT, RoutingRecord

ROUNDS = 15
PER_ROUND = 2000


class _NoStore:
    """The writer is never started: add() is what the request pays; the queue is drained between rounds."""


def _record(n: int) -> RoutingRecord:
    return RoutingRecord(
        requested_model="house",
        outcome="ok",
        provider="acme",
        model="acme-chat",
        correlation_id=f"bench-{n:08d}",
        tenant_id="default",
        user_hash="3f1c0e2a0d654a5e",
        api_key_id="3b9d6c1e-8a52-4f0e-b1d7-6c2a9e4f5d38",
        policy="",
        prompt_tokens=12,
        completion_tokens=40,
        cost_usd=0.0000924,
        latency_ms=412.5,
        fallback_chain=["acme/acme-chat"],
    )


def _round(writer: BatchWriter, rows: list[tuple]) -> float:
    started = time.perf_counter()
    for row in rows:
        writer.add(row)
    elapsed = (time.perf_counter() - started) / len(rows) * 1e6
    writer._take(len(rows))  # noqa: SLF001 - empty the queue as the background writer would
    if writer.journal is not None:
        writer.journal.committed(writer._seq)  # noqa: SLF001 - and commit, which empties the journal
    return elapsed


async def _measure(directory: Path) -> dict[str, list[float]]:
    batch.QUEUE_LIMIT = PER_ROUND * 2
    writers = {
        "queue": BatchWriter(_NoStore(), "routing_requests", INSERT),  # type: ignore[arg-type]
        "journal": BatchWriter(
            _NoStore(),  # type: ignore[arg-type]
            "routing_requests",
            INSERT,
            journal=Journal(directory, "bench"),
        ),
    }
    rows = [_record(n).row() for n in range(PER_ROUND)]
    for writer in writers.values():
        _round(writer, rows)  # warm up
    results: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(ROUNDS):
        for name, writer in writers.items():
            results[name].append(_round(writer, rows))
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as directory:
        results = asyncio.run(_measure(Path(directory)))
    queue, journal = median(results["queue"]), median(results["journal"])
    body = f"""
`BatchWriter.add` of one routing-ledger row, in-process, one core; {ROUNDS} rounds of {PER_ROUND}, the
two taking turns; per-round mean, then median and p95 over rounds. Load average
{os.getloadavg()[0]:.1f} on {usable_cores()} cores (shared machine): absolute numbers inflate alike.

| add() | p50 | p95 |
| --- | --- | --- |
| in-memory queue only (before) | {queue:.1f} µs | {percentile(results["queue"], 95):.1f} µs |
| journal line + queue (now) | {journal:.1f} µs | {percentile(results["journal"], 95):.1f} µs |

The journal adds {journal - queue:.1f} µs per booked row (one `json.dumps` and one `write(2)` to a file
opened `O_APPEND`, no fsync), against the gateway+router's own ~3-4 ms per request (## Router). For that,
no answered request is missing from the books after a SIGKILL of the router or while Postgres is away
(tests/unit/common/test_batch_journal.py, tests/integration/test_router.py).
"""
    print(body)
    write_section("Write-ahead journal", body, "python -m bench.journal_bench")


if __name__ == "__main__":
    main()
