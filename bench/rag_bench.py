"""RAG speed through the gateway: ingest chunks/s, and query p50/p95 at RAG_BENCH_CHUNKS (10,000) chunks
(goals on the 2-core machine: ingest > 200 chunks/s, query p95 < 25 ms).

The corpus is real text: the Python documentation's topics (``pydoc_data.topics``, in the standard
library), cut into documents of RAG_BENCH_DOC_CHUNKS (20) chunks' worth of text and uploaded one after
another as ``goblin ingest`` does, until the collection holds the target number of chunks. Ingest
includes everything a document costs: parsing, the secret scan, chunking, embedding every chunk in
the inference service, the Chroma upsert and the keyword index rebuild. Each query embeds its text,
searches Chroma and BM25, fuses and returns the top 5; sequential requests on one keep-alive HTTPS
connection, so the numbers are per-request latency. Rate limiting is off.
Each of RAG_BENCH_RUNS (3) runs ingests into a new collection and queries it; the medians of the runs
are reported. Also timed: one keyword-index change (a document's chunks replaced) at the same size.
Run: `make bench` or `python -m bench.rag_bench` (BENCH_NO_WRITE=1 for a trial; RAG_BENCH_CHUNKS=1000
RAG_BENCH_RUNS=1 for a short one). Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from pydoc_data.topics import topics

import httpx

from bench.results import median, percentile, write_section
from goblin_tools.suite import start_suite

WORK = Path(__file__).resolve().parent / ".work"
TARGET_CHUNKS = int(os.environ.get("RAG_BENCH_CHUNKS", "10000"))
DOC_CHUNKS = int(os.environ.get("RAG_BENCH_DOC_CHUNKS", "20"))
QUERIES = 200
WARM_UP = 20
RUNS = int(os.environ.get("RAG_BENCH_RUNS", "3"))
# The keyword-index change is timed at this size whatever RAG_BENCH_CHUNKS is (it needs no embedding).
KEYWORD_CHUNKS = int(os.environ.get("RAG_BENCH_KEYWORD_CHUNKS", "10000"))
# About 1,000 characters of this prose make one 256-token chunk.
CHARS_PER_CHUNK = 1000


def documents() -> list[tuple[str, str]]:
    """(id, text) pairs cut from the topics, repeated with a round number once they run out."""
    text = "\n\n".join(topics[name] for name in sorted(topics))
    size = DOC_CHUNKS * CHARS_PER_CHUNK
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    out = []
    for round_ in range(100):
        out.extend((f"r{round_}-p{i}", f"Round {round_}.\n\n{piece}") for i, piece in enumerate(pieces))
    return out


def keyword_changes(target: int, changes: int = 20) -> list[float]:
    """Seconds per keyword-index change at ``target`` chunks (services.rag.keyword.KeywordIndex on disk,
    as the service keeps it): one document's DOC_CHUNKS chunks replaced per change, as a re-ingest does."""
    from services.rag.keyword import KeywordIndex

    texts = [text[i : i + CHARS_PER_CHUNK] for _, text in documents() for i in range(0, len(text), CHARS_PER_CHUNK)]
    texts = texts[:target]
    ids = [f"d{i // DOC_CHUNKS}:{i % DOC_CHUNKS}" for i in range(len(texts))]
    root = WORK / "keyword"
    shutil.rmtree(root, ignore_errors=True)
    index = KeywordIndex.build(root / "col", ids, texts)
    seconds = []
    for change in range(changes):
        document = ids[change * DOC_CHUNKS : (change + 1) * DOC_CHUNKS]
        started = time.perf_counter()
        index.update(remove=document, add_ids=document, add_texts=[f"changed {change} {t}" for t in texts[:DOC_CHUNKS]])
        seconds.append(time.perf_counter() - started)
    shutil.rmtree(root, ignore_errors=True)
    return seconds


def one_run(client: httpx.Client, collection: str) -> dict[str, float]:
    """Ingest into a new collection up to TARGET_CHUNKS, then time QUERIES queries against it."""
    assert client.post("/v1/collections", json={"name": collection}).status_code == 201
    chunks = 0
    ingest_s = 0.0
    docs = 0
    for doc_id, text in documents():
        started = time.perf_counter()
        reply = client.post(f"/v1/collections/{collection}/documents", json={"text": text, "document_id": doc_id})
        ingest_s += time.perf_counter() - started
        if reply.status_code != 201:
            raise RuntimeError(f"ingest {doc_id}: {reply.status_code} {reply.text[:200]}")
        chunks += reply.json()["chunk_count"]
        docs += 1
        if chunks >= TARGET_CHUNKS:
            break
    questions = [f"What does the {name.replace('-', ' ')} section say?" for name in sorted(topics)]
    latencies = []
    hits = 0
    for i in range(QUERIES + WARM_UP):
        started = time.perf_counter()
        reply = client.post(
            f"/v1/collections/{collection}/query", json={"query": questions[i % len(questions)], "top_k": 5}
        )
        elapsed = (time.perf_counter() - started) * 1000
        if reply.status_code != 200:
            raise RuntimeError(f"query: {reply.status_code} {reply.text[:200]}")
        if i >= WARM_UP:
            latencies.append(elapsed)
            hits += reply.json()["hit"]
    print(
        f"{collection}: {chunks} chunks in {docs} docs, {chunks / ingest_s:.0f} chunks/s, "
        f"p50 {median(latencies):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, hits {hits}/{len(latencies)}",
        flush=True,
    )
    return {
        "chunks": chunks,
        "docs": docs,
        "ingest_s": ingest_s,
        "rate": chunks / ingest_s,
        "p50": median(latencies),
        "p95": percentile(latencies, 95),
        "hits": hits,
    }


def main() -> None:
    load_before = os.getloadavg()
    changes = keyword_changes(KEYWORD_CHUNKS)
    home = WORK / "rag"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, GOBLIN_RATE_LIMIT_ENABLED="false")
    try:
        suite.wait_ready()
        with suite.admin_client() as client:
            client.timeout = httpx.Timeout(600)
            runs = [one_run(client, f"bench-{i}") for i in range(RUNS)]
    finally:
        suite.stop()
    load_after = os.getloadavg()

    def mid(key: str) -> float:
        return median([r[key] for r in runs])

    def each(key: str, fmt: str) -> str:
        return ", ".join(format(r[key], fmt) for r in runs)

    body = (
        f"{RUNS} runs in one suite, each into a new collection of {runs[0]['chunks']:.0f} chunks "
        f"({runs[0]['docs']:.0f} documents of about {DOC_CHUNKS} chunks, uploaded one after another), then "
        f"{QUERIES} queries (after {WARM_UP} warm-up); the table gives the median of the runs (each run's "
        f"value in brackets). The machine is shared with other engineers' test runs (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after): upper bounds.\n\n"
        "| measure | median of runs | goal |\n| --- | --- | --- |\n"
        f"| ingest | {mid('rate'):.1f} chunks/s ({each('rate', '.1f')}) | > 200 chunks/s |\n"
        f"| query p50 (top 5, through the gateway) | {mid('p50'):.1f} ms ({each('p50', '.1f')}) | |\n"
        f"| query p95 | {mid('p95'):.1f} ms ({each('p95', '.1f')}) | < 25 ms |\n"
        f"| queries that were hits (threshold 0.50) | {mid('hits'):.0f}/{QUERIES} ({each('hits', '.0f')}) | |\n"
        f"| keyword index change at {KEYWORD_CHUNKS} chunks (tantivy, one document's {DOC_CHUNKS} chunks "
        f"replaced, {len(changes)} changes) | p50 {median(changes) * 1000:.0f} ms, max {max(changes) * 1000:.0f} ms "
        "| (bm25s before it: ~9.6 s) |\n"
    )
    write_section("RAG speed", body, "make bench (python -m bench.rag_bench)")
    print(body)


if __name__ == "__main__":
    main()
