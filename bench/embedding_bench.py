"""The floor under RAG ingest: what the embedding model alone does on this machine. Chunks of 256 tokens
(the chunker's default) through the inference service's own :class:`Embedder` (all-MiniLM-L6-v2 on
onnxruntime), in-process, with one intra-op thread (what the inference service gives embeddings, so
that chat keeps a core) and with every core. Nothing else runs in the process: no gateway, no gRPC,
no Chroma, no keyword index; ingest through the gateway can only be slower. Run:
``python -m bench.embedding_bench``.
"""

from __future__ import annotations

import os
import time

from bench.results import median, write_section
from services.common.process import usable_cores
from services.inference.embeddings import Embedder
from services.inference.models import embedding_model_files

CHUNKS = 16
RUNS = 3
WORDS = (
    "retrieval augmented generation splits each document into chunks of about two hundred and fifty six "
    "tokens embeds every chunk with a sentence transformer and stores the vectors beside a keyword index "
)


def _chunks(embedder: Embedder) -> list[str]:
    text = WORDS
    while embedder.count_tokens([text])[0] < 300:
        text += WORDS
    return [f"{n} {text}" for n in range(CHUNKS)]  # truncated to the model's 256 tokens each


def _rate(embedder: Embedder, chunks: list[str]) -> float:
    started = time.perf_counter()
    result = embedder.embed(chunks)
    elapsed = time.perf_counter() - started
    assert len(result.vectors) == len(chunks)
    return len(chunks) / elapsed


def main() -> None:
    files = embedding_model_files()
    cores = usable_cores()
    rows, best = [], 0.0
    for threads in sorted({1, cores}):
        embedder = Embedder.from_files(files, intra_op_threads=threads)
        try:
            chunks = _chunks(embedder)
            tokens = embedder.count_tokens(chunks[:1])[0]
            _rate(embedder, chunks[:8])  # warm up
            rates = [_rate(embedder, chunks) for _ in range(RUNS)]
        finally:
            embedder.close()
        best = max(best, median(rates))
        rows.append(f"| {threads} | {tokens} | {median(rates):.1f} chunks/s ({', '.join(f'{r:.1f}' for r in rates)}) |")
    verdict = (
        f"{200 / best:.0f}x this ceiling, out of reach whatever the rest of the path does"
        if best < 200
        else "below this ceiling"
    )
    body = f"""
{CHUNKS} chunks per run, {RUNS} runs, median (runs in brackets); load average {os.getloadavg()[0]:.1f} on
{cores} cores when it finished.

| intra-op threads | tokens per chunk | embedding alone |
| --- | --- | --- |
{chr(10).join(rows)}

This is the ceiling for ingest on this machine with this model and chunk size: ingest through the
gateway adds parsing, scanning, gRPC, Chroma and the keyword index to it. The goal of > 200 chunks/s is
{verdict}.
"""
    print(body)
    write_section("RAG: the embedding floor", body, "python -m bench.embedding_bench")


if __name__ == "__main__":
    main()
