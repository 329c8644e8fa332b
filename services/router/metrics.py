"""Router metrics. Names used by dashboards and alerts are fixed by SPEC.md."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

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
ROUTER_OVERHEAD = Histogram(
    "goblin_router_overhead_seconds",
    "Time a request spent in the router itself: its whole handling minus the time waiting on providers.",
    ["operation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.05, 0.1),
)
CIRCUIT_STATE = Gauge(
    "goblin_router_circuit_state",
    'Circuit breaker per model deployment (model: the catalog\'s model id; "*": the provider-wide circuit '
    "for connection and TLS failures): 0 closed, 1 half-open, 2 open.",
    ["provider", "model"],
)
RETRIES = Counter("goblin_router_retries_total", "Calls repeated at the same provider.", ["provider"])
PROVIDER_ERRORS = Counter(
    "goblin_router_provider_errors_total", "Failed provider calls by error code.", ["provider", "code"]
)
BUDGET_REFUSALS = Counter("goblin_router_budget_refusals_total", "Requests refused over a daily budget.", ["scope"])
TOKENS = Counter("goblin_router_tokens_total", "Tokens through the router.", ["provider", "model", "kind"])
CACHE_ERRORS = Counter("goblin_router_cache_errors_total", "Response cache reads or writes that failed.")
# The installation's daily dollar budget (GOBLIN_DAILY_BUDGET_USD), so an alert can compare spend with it.
DAILY_BUDGET = Gauge("goblin_router_daily_budget_usd", "The installation's daily budget in US dollars.")
BUDGET_SYNC_ERRORS = Counter("goblin_router_budget_sync_errors_total", "Failed exchanges of spend counters with Redis.")


@lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
    """``metric.labels(*labels)``, remembered: the hot path asks for the same few children every request
    and ``labels()`` costs microseconds each time. Label values here come from the catalog (bounded)."""
    return metric.labels(*labels)
