"""RAG speed through the gateway: ingest chunks/s, and query p50/p95 at RAG_BENCH_CHUNKS (10,000) chunks
(goals on the 2-core machine: ingest > 200 chunks/s, query p95 < 25 ms).

The corpus is real text: the Python documentation's topics (``pydoc_data.topics``, in the standard
library), cut into documents of RAG_BENCH_DOC_CHUNKS (20) chunks' worth of text and uploaded one after
another as ``goblin ingest`` does, until the collection holds the target number of chunks. Ingest
includes everything a document costs: parsing, the secret scan, chunking, embedding every chunk in
the inference service, the Chroma upsert and the keyword index rebuild. Each query embeds its text,
searches Chroma and BM25, fuses and returns the top 5; sequential requests on one keep-alive HTTPS
connection, so the numbers are per-request latency. Rate limiting is off.
Run: `make bench` or `python -m bench.rag_bench` (BENCH_NO_WRITE=1 for a trial; RAG_BENCH_CHUNKS=1000
for a short one). Talks to 127.0.0.1 only.
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


def main() -> None:
    home = WORK / "rag"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, GOBLIN_RATE_LIMIT_ENABLED="false")
    try:
        suite.wait_ready()
        with suite.admin_client() as client:
            client.timeout = httpx.Timeout(600)
            assert client.post("/v1/collections", json={"name": "bench"}).status_code == 201
            chunks = 0
            ingest_s = 0.0
            docs = 0
            for doc_id, text in documents():
                started = time.perf_counter()
                reply = client.post("/v1/collections/bench/documents", json={"text": text, "document_id": doc_id})
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
                    "/v1/collections/bench/query", json={"query": questions[i % len(questions)], "top_k": 5}
                )
                elapsed = (time.perf_counter() - started) * 1000
                if reply.status_code != 200:
                    raise RuntimeError(f"query: {reply.status_code} {reply.text[:200]}")
                if i >= WARM_UP:
                    latencies.append(elapsed)
                    hits += reply.json()["hit"]
    finally:
        suite.stop()
    body = (
        f"{chunks} chunks in {docs} documents of about {DOC_CHUNKS} chunks, uploaded one after another.\n\n"
        "| measure | value | goal |\n| --- | --- | --- |\n"
        f"| ingest | {chunks / ingest_s:.0f} chunks/s ({ingest_s:.0f} s) | > 200 chunks/s |\n"
        f"| query p50 (top 5, through the gateway) | {median(latencies):.1f} ms | |\n"
        f"| query p95 | {percentile(latencies, 95):.1f} ms | < 25 ms |\n"
        f"| queries that were hits | {hits}/{len(latencies)} | |\n"
    )
    write_section("RAG speed", body, "make bench (python -m bench.rag_bench)")
    print(body)


if __name__ == "__main__":
    main()
