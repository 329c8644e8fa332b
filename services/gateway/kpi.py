"""The KPI document of the admin page (``GET /mcp/v1/admin/dashboard``) and ``goblin top``.

Plain logic, no I/O: :func:`build_document` turns what :mod:`services.gateway.kpi_sources` gathered
(Prometheus samples of the gateway and of every service, the router's books and provider states,
health answers) into one JSON-ready dict, each KPI coloured against the design notes' thresholds.

Ratios and percentiles are over the life of each process (the counters Prometheus scrapes, read at
their source): the page is the single-machine operator's glance, and Grafana has the windows. Cost
and fallbacks are today's (UTC), from the router's ledger. Rates (tokens/s) are the change between
two readings of this gateway, a few seconds apart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The design notes' thresholds ("Monitored KPIs"): value above (or, for "below", under) the warning
# or critical figure colours the KPI. 429 rate and queue wait have none there: ours are marked so.
Labels = Mapping[str, str]

QUEUE_LENGTH = "goblin_inference_queue_length"
# A queue-wait histogram when the inference service exports one; else time to first token, which is the
# wait plus the prompt's prefill, so an upper bound of it.
WAIT_HISTOGRAMS = ("goblin_inference_queue_wait_seconds", "goblin_inference_time_to_first_token_seconds")
# Auth's alert-worthy events that are not an attack: a tenant spending its quota is shown, not counted.
NOT_VIOLATIONS = frozenset({"quota_exhausted"})
OPERATOR_PREFIXES = ("/health", "/api/health", "/metrics", "/mcp/v1/admin", "/docs", "/redoc", "/openapi.json")


@dataclass(frozen=True)
class Threshold:
    """When a KPI turns amber and red; ``below``: the KPI is bad when low (RAG hit rate)."""

    warning: float
    critical: float
    below: bool = False
    source: str = "design notes"

    def status(self, value: float | None) -> str:
        """``ok``, ``warning``, ``critical`` or ``unknown`` (no data yet)."""
        if value is None or math.isnan(value):
            return "unknown"
        if self.below:
            return "critical" if value < self.critical else "warning" if value < self.warning else "ok"
        return "critical" if value > self.critical else "warning" if value > self.warning else "ok"


THRESHOLDS: dict[str, Threshold] = {
    "p95_latency_s": Threshold(1.0, 1.5),
    "error_rate": Threshold(0.01, 0.03),
    "rag_hit_rate": Threshold(0.70, 0.60, below=True),
    "fallback_rate": Threshold(0.02, 0.05),
    "queue_depth": Threshold(25, 50),
    "daily_cost_usd": Threshold(25, 50),
    "security_violations": Threshold(0, 1),
    # Not in the design notes: a share of refusals that means clients are misconfigured, or under attack.
    "rate_429": Threshold(0.05, 0.20, source="goblin default"),
    # The alert: 80 % of the capacity (critical), and a warning at half.
    "queue_used": Threshold(0.5, 0.8, source="issue 16"),
    "budget_used": Threshold(0.8, 1.0, source="issue 16"),
    "queue_wait_p95_s": Threshold(1.0, 5.0, source="goblin default"),
}


@dataclass
class Samples:
    """Prometheus samples by sample name (``x_total``, ``x_bucket``): (labels, value) pairs, from one
    process or several (a metric served by many processes is summed over them)."""

    by_name: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def add(self, name: str, labels: Labels, value: float) -> None:
        self.by_name.setdefault(name, []).append((dict(labels), value))

    def extend(self, other: Samples) -> None:
        for name, rows in other.by_name.items():
            self.by_name.setdefault(name, []).extend(rows)

    def has(self, name: str) -> bool:
        return name in self.by_name

    def total(self, name: str, where: Callable[[Labels], bool] = lambda _: True) -> float:
        """The sum of ``name`` over the samples whose labels pass ``where``."""
        return sum(v for labels, v in self.by_name.get(name, ()) if where(labels))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``name`` summed per value of ``label``."""
        out: dict[str, float] = {}
        for labels, value in self.by_name.get(name, ()):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def quantile(self, q: float, histogram: str, where: Callable[[Labels], bool] = lambda _: True) -> float | None:
        """``histogram_quantile(q, ...)`` over the buckets of ``histogram`` passing ``where`` (summed
        across other labels), interpolating linearly inside the bucket as Prometheus does; None with
        no observations."""
        buckets: dict[float, float] = {}
        for labels, value in self.by_name.get(f"{histogram}_bucket", ()):
            if where(labels):
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
        return histogram_quantile(q, buckets)

    @classmethod
    def from_families(cls, families: Iterable[Any]) -> Samples:
        """From ``prometheus_client`` metric families (a registry's ``collect()`` or the text parser)."""
        samples = cls()
        for family in families:
            for sample in family.samples:
                samples.add(sample.name, sample.labels, sample.value)
        return samples


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` (upper bound -> count); None when empty."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: its bound is the best answer
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def is_api_endpoint(labels: Labels) -> bool:
    """Requests users make, not the probes, scrapes and operator pages polling the gateway."""
    return not labels.get("endpoint", "").startswith(OPERATOR_PREFIXES)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


class RateMeter:
    """Per-second rate of a counter between readings of this process: the oldest reading within
    ``window_s`` against the newest (at least ``min_gap_s`` apart, else the previous rate stands)."""

    def __init__(self, window_s: float = 60.0, min_gap_s: float = 1.0) -> None:
        self.window_s = window_s
        self.min_gap_s = min_gap_s
        self._readings: deque[tuple[float, float]] = deque()

    def observe(self, value: float, now: float | None = None) -> float | None:
        """Record ``value`` at ``now``; the rate over the window, None until two readings exist."""
        now = time.monotonic() if now is None else now
        if self._readings and value < self._readings[-1][1]:
            self._readings.clear()  # the counter went back: its process restarted, older readings are void
        if not self._readings or now - self._readings[-1][0] >= self.min_gap_s:
            self._readings.append((now, value))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window_s:
            self._readings.popleft()
        (t0, v0), (t1, v1) = self._readings[0], self._readings[-1]
        if t1 - t0 <= 0:  # one reading so far
            return None
        return (v1 - v0) / (t1 - t0)


def kpi(kpi_id: str, label: str, value: float | None, unit: str, detail: str = "") -> dict[str, Any]:
    """One KPI as the page shows it: value, unit, status and the thresholds it was judged by."""
    threshold = THRESHOLDS.get(kpi_id)
    shown = None if value is None or math.isnan(value) else round(value, 6)
    entry: dict[str, Any] = {"id": kpi_id, "label": label, "value": shown, "unit": unit, "detail": detail}
    if threshold is None:
        entry["status"] = "info" if shown is not None else "unknown"
    else:
        entry.update(
            status=threshold.status(shown),
            warning=threshold.warning,
            critical=threshold.critical,
            direction="below" if threshold.below else "above",
            threshold_source=threshold.source,
        )
    return entry


@dataclass
class KpiInputs:
    """What :mod:`.kpi_sources` gathered for one document; a source that failed is named in ``errors``."""

    gateway: Samples
    services: dict[str, Samples]  # per backend service, its /metrics (absent when the scrape failed)
    health: list[dict[str, Any]]  # [{"name", "status", "latency_ms", ...}]
    providers: list[dict[str, Any]]
    usage_all: dict[str, Any] | None  # the router's books for today, every tenant
    tenants: list[dict[str, Any]]  # [{"id", "name", "cost_usd", "budget_usd"}]
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tokens_per_s: float | None = None


def build_document(inputs: KpiInputs, *, started_at: float, now: float | None = None) -> dict[str, Any]:
    """The KPI document: ``kpis`` (coloured), then the detail behind them (traffic, services, providers,
    budget, inference, security, events) and ``errors`` naming any source that did not answer."""
    now = time.time() if now is None else now
    gw = inputs.gateway
    every = Samples()
    every.extend(gw)
    for samples in inputs.services.values():
        every.extend(samples)
    rag = inputs.services.get("rag", Samples())
    inference = inputs.services.get("inference", Samples())

    requests = gw.total("http_requests_total", is_api_endpoint)
    errors_5xx = gw.total("http_requests_total", lambda lb: is_api_endpoint(lb) and lb["status_code"][:1] == "5")
    refused_429 = gw.total("http_requests_429_total", is_api_endpoint)
    p95 = gw.quantile(0.95, "http_request_duration_seconds", is_api_endpoint)
    rag_queries = rag.by_label("goblin_rag_queries_total", "hit")
    rag_total = sum(rag_queries.values())
    usage = inputs.usage_all or {}
    fallbacks, routed = usage.get("fallbacks", 0), usage.get("requests", 0)
    queue_length = inference.total(QUEUE_LENGTH) if inference.has(QUEUE_LENGTH) else None
    queue_capacity = inference.total("goblin_inference_queue_capacity")
    queue_used = ratio(queue_length, queue_capacity) if queue_length is not None else None
    wait_metric = next((m for m in WAIT_HISTOGRAMS if inference.has(f"{m}_bucket")), None)
    queue_wait = inference.quantile(0.95, wait_metric) if wait_metric else None
    secrets = every.by_label("goblin_security_secrets_detected_total", "location")
    auth_events = inputs.services.get("auth", Samples()).by_label("goblin_auth_security_events_total", "event")
    violations = sum(secrets.values()) + sum(n for e, n in auth_events.items() if e not in NOT_VIOLATIONS)
    cost = usage.get("cost_usd") if inputs.usage_all is not None else None
    budget_used = max((t["used"] for t in inputs.tenants if t.get("used") is not None), default=None)

    kpis = [
        kpi("p95_latency_s", "P95 latency", p95, "s", "API requests, since the gateway started"),
        kpi(
            "error_rate", "Error rate", ratio(errors_5xx, requests), "ratio", f"{errors_5xx:.0f} of {requests:.0f} 5xx"
        ),
        kpi(
            "rag_hit_rate",
            "RAG hit rate",
            ratio(rag_queries.get("true", 0.0), rag_total),
            "ratio",
            f"{rag_total:.0f} queries",
        ),
        kpi(
            "fallback_rate",
            "Fallback rate",
            ratio(fallbacks, routed),
            "ratio",
            f"today: {fallbacks} of {routed} requests",
        ),
        kpi("queue_depth", "Inference queue depth", queue_length, "requests", f"capacity {queue_capacity:.0f}"),
        kpi("queue_used", "Inference queue used", queue_used, "ratio", "of the queue's capacity"),
        kpi("queue_wait_p95_s", "Inference wait p95", queue_wait, "s", wait_metric or "no inference histogram"),
        kpi("daily_cost_usd", "Daily cost", cost, "usd", "today (UTC), every tenant"),
        kpi("budget_used", "Budget used", budget_used, "ratio", "the tenant closest to its daily budget"),
        kpi("security_violations", "Security violations", violations, "events", "secrets caught and auth alerts"),
        kpi("rate_429", "429 rate", ratio(refused_429, requests), "ratio", f"{refused_429:.0f} refused"),
        kpi("tokens_per_s", "Tokens/s", inputs.tokens_per_s, "tokens/s", "completion tokens through the gateway"),
    ]
    return {
        "generated_at": _iso(now),
        "since": _iso(started_at),
        "scope": "global",
        "kpis": kpis,
        "traffic": {
            "requests": int(requests),
            "errors_5xx": int(errors_5xx),
            "rate_limited": int(refused_429),
            "chat_completions": int(gw.total("chat_completions_total")),
            "completion_tokens": int(completion_tokens(gw)),
            "rag_queries": {k: int(v) for k, v in sorted(rag_queries.items())},
        },
        "services": inputs.health,
        "providers": inputs.providers,
        "budget": {"today": inputs.usage_all, "tenants": inputs.tenants},
        "inference": {
            "model_loaded": bool(inference.total("goblin_inference_model_loaded")),
            "queue_length": None if queue_length is None else int(queue_length),
            "queue_capacity": int(queue_capacity),
            "active_sequences": int(inference.total("goblin_inference_active_sequences")),
            "wait_p95_s": queue_wait,
        },
        "security": {
            "violations": int(violations),
            "secrets_detected": {k: int(v) for k, v in sorted(secrets.items())},
            "auth_events": {k: int(v) for k, v in sorted(auth_events.items())},
        },
        "events": inputs.events,
        "errors": inputs.errors,
    }


def completion_tokens(gateway: Samples) -> float:
    """Completion tokens answered through the gateway (every provider), the tokens/s counter."""
    return gateway.total("chat_completion_tokens_total", lambda lb: lb.get("token_type") == "completion")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
