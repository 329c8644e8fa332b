"""RAG metrics. Names used by dashboards and alerts are fixed by SPEC.md; the hit rate is
queries_total{hit="true"} over queries_total."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUERIES = Counter("goblin_rag_queries_total", "Queries, by whether the best cosine reached the threshold.", ["hit"])
QUERY_LATENCY = Histogram(
    "goblin_rag_query_latency_seconds",
    "Time to answer a query, the query's embedding included.",
    buckets=(0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BEST_SCORE = Histogram(
    "goblin_rag_best_score",
    "The best cosine similarity of each query's hits (0 when nothing came back).",
    buckets=(0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
CHUNKS_INDEXED = Counter("goblin_rag_chunks_indexed_total", "Chunks embedded and written to the stores.")
DOCUMENTS_INGESTED = Counter(
    "goblin_rag_documents_ingested_total", "Documents indexed, new or replacing a changed one.", ["outcome"]
)
