"""Router metrics. Names used by dashboards and alerts are fixed by SPEC.md."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PROVIDER_LATENCY = Histogram(
    "provider_latency_seconds",
    "Time a provider took: whole answer (chat), first token (chat_ttft), or embeddings.",
    ["provider", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60, 120),
)
FALLBACKS = Counter(
    "goblin_router_fallbacks_total", "Requests moved to another provider.", ["from_provider", "to_provider"]
)
COST = Counter("goblin_router_cost_usd_total", "Spend in US dollars.", ["provider", "model"])
CACHE_HITS = Counter("goblin_router_cache_hits_total", "Answers served from the response cache.")
REQUESTS = Counter("goblin_router_requests_total", "Routed requests by outcome.", ["provider", "outcome"])
LEDGER_DROPPED = Counter("goblin_router_ledger_dropped_total", "Routing records that could not be written.")
