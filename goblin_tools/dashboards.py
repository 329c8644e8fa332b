"""Goblin's Grafana dashboards, built with grafana-foundation-sdk; ``make dashboards`` writes them.

One overview with the design notes' KPIs, coloured at the thresholds the alert rules use
(``deploy/helm/goblin/rules/``), and one dashboard per service. The JSON goes to the chart's
``dashboards/`` directory, where ``templates/monitoring.yaml`` makes one ConfigMap per file for Grafana's
dashboard sidecar (``metrics.grafanaDashboards.enabled``). Every panel reads the ``datasource`` variable,
so the dashboards work with whatever the Prometheus data source is called.

Commands (``python -m goblin_tools.dashboards ...``): ``write`` (the default) regenerates the files;
``--check`` fails, naming them, when a committed file differs from what this source builds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from goblin_tools.dashboards_panels import (
    GREEN,
    ORANGE,
    RED,
    USER_ROUTES,
    Q,
    board,
    graph,
    grpc_row,
    kpi,
    p,
    process_row,
)
from goblin_tools.deploy_tools import CHART_DIR

DASHBOARDS_DIR = CHART_DIR / "dashboards"


# The KPI expressions, shared by the overview and the service dashboards (and the same as the alerts').
P95_LATENCY = p(0.95, "http_request_duration_seconds", USER_ROUTES)
ERROR_RATE = (
    f'sum(rate(http_requests_total{{status_code=~"5..", {USER_ROUTES}}}[5m])) '
    f"/ sum(rate(http_requests_total{{{USER_ROUTES}}}[5m]))"
)
RAG_HIT_RATE = 'sum(rate(goblin_rag_queries_total{hit="true"}[30m])) / sum(rate(goblin_rag_queries_total[30m]))'
FALLBACK_RATE = "sum(rate(goblin_router_fallbacks_total[15m])) / sum(rate(goblin_router_requests_total[15m]))"
DAILY_COST = "sum(increase(goblin_router_cost_usd_total[1d]))"
BUDGET_USED = f"{DAILY_COST} / max(goblin_router_daily_budget_usd)"
# As the SecurityViolations alert counts them: a series born within the day (at its first event, with the
# value 1, which increase() cannot see) counts with its whole value.
_EVENTS = 'goblin_auth_security_events_total{event!="quota_exhausted"}'
SECURITY_EVENTS = (
    f"sum((increase({_EVENTS}[1d]) and goblin_auth_security_events_total offset 1d)"
    f" or ({_EVENTS} unless goblin_auth_security_events_total offset 1d))"
)
TOKENS_PER_S = 'sum(rate(chat_completion_tokens_total{token_type="completion"}[5m]))'


def overview() -> model.Dashboard:
    kpis = [
        kpi(
            "p95 latency",
            Q(P95_LATENCY),
            unit="s",
            steps=[(1, ORANGE), (1.5, RED)],
            description="Gateway, user routes.",
        ),
        kpi(
            "Error rate",
            Q(ERROR_RATE),
            unit="percentunit",
            steps=[(0.01, ORANGE), (0.03, RED)],
            description="5xx share.",
        ),
        kpi("RAG hit rate", Q(RAG_HIT_RATE), unit="percentunit", base=RED, steps=[(0.6, ORANGE), (0.7, GREEN)]),
        kpi("Fallback rate", Q(FALLBACK_RATE), unit="percentunit", steps=[(0.02, ORANGE), (0.05, RED)]),
        kpi(
            "Inference queue",
            Q("sum(goblin_inference_queue_length)"),
            unit="short",
            steps=[(25, ORANGE), (50, RED)],
            description="Requests waiting for the local model, all replicas.",
        ),
        kpi(
            "Inference wait p95",
            Q(p(0.95, "goblin_inference_time_to_first_token_seconds")),
            unit="s",
            steps=[(1, ORANGE), (1.5, RED)],
            description="Admission to first token: the queue wait plus the prompt's evaluation.",
        ),
        kpi("Cost, 24 h", Q(DAILY_COST), unit="currencyUSD", steps=[(25, ORANGE), (50, RED)]),
        kpi(
            "Budget used, 24 h",
            Q(BUDGET_USED),
            unit="percentunit",
            steps=[(0.8, ORANGE), (1, RED)],
            description="Spend over the daily budget (GOBLIN_DAILY_BUDGET_USD).",
        ),
        kpi(
            "Security events, 24 h",
            Q(SECURITY_EVENTS),
            unit="short",
            steps=[(0.5, ORANGE), (1.5, RED)],
            description="Reused refresh tokens, cloned passkeys, locked accounts.",
        ),
        kpi("429 rate", Q("sum(rate(http_requests_429_total[5m]))"), unit="reqps", steps=[(0.1, ORANGE), (1, RED)]),
        kpi("Tokens/s", Q(TOKENS_PER_S), unit="short", description="Completion tokens, every provider."),
        kpi(
            "Services healthy",
            Q("min(service_health_status)"),
            unit="short",
            base=RED,
            steps=[(1, GREEN)],
            mappings={"0": ("DOWN", RED), "1": ("ALL UP", GREEN)},
            description="The gateway's health checks of every backend.",
        ),
    ]
    trends = [
        graph(
            "Gateway latency",
            Q(p(0.5, "http_request_duration_seconds", USER_ROUTES), "p50"),
            Q(P95_LATENCY, "p95"),
            Q(p(0.99, "http_request_duration_seconds", USER_ROUTES), "p99"),
            unit="s",
            steps=[(1, ORANGE), (1.5, RED)],
        ),
        graph("Error rate", Q(ERROR_RATE, "5xx share"), unit="percentunit", steps=[(0.01, ORANGE), (0.03, RED)]),
        graph(
            "Requests by status",
            Q(f"sum by (status_code) (rate(http_requests_total{{{USER_ROUTES}}}[5m]))", "{{status_code}}"),
            unit="reqps",
            stacked=True,
        ),
        graph(
            "RAG hit rate",
            Q(RAG_HIT_RATE, "hit rate"),
            unit="percentunit",
            base=RED,
            steps=[(0.6, ORANGE), (0.7, GREEN)],
        ),
        graph("Fallback rate", Q(FALLBACK_RATE, "fallbacks"), unit="percentunit", steps=[(0.02, ORANGE), (0.05, RED)]),
        graph(
            "Queues",
            Q("sum(goblin_inference_queue_length)", "inference"),
            Q("sum(goblin_inference_queue_capacity)", "inference capacity"),
            Q("max(goblin_executor_queue_depth)", "executor"),
            steps=[(25, ORANGE), (50, RED)],
        ),
        graph(
            "Spend per hour by provider",
            Q("sum by (provider) (increase(goblin_router_cost_usd_total[1h]))", "{{provider}}"),
            unit="currencyUSD",
            stacked=True,
        ),
        graph(
            "Security",
            Q("sum by (event) (increase(goblin_auth_security_events_total[1h]))", "{{event}}"),
            Q("sum by (location) (increase(goblin_security_secrets_detected_total[1h]))", "secret at {{location}}"),
            description="Per hour: auth's security events, and secrets found (redacted or blocked) by where.",
        ),
        graph(
            "Service health (gateway's view)",
            Q("min by (service_name) (service_health_status)", "{{service_name}}"),
            width=12,
        ),
        graph("Scrape targets up", Q("sum by (job) (up)", "{{job}}"), width=12),
    ]
    return board(
        "goblin-overview",
        "Goblin / Overview",
        "The design notes' KPIs, coloured at the alert rules' thresholds (deploy/helm/goblin/rules/).",
        [("KPIs", kpis), ("Trends", trends)],
    )


def gateway() -> model.Dashboard:
    rows = [
        (
            "HTTP",
            [
                graph(
                    "Requests by route",
                    Q("sum by (endpoint) (rate(http_requests_total[5m]))", "{{endpoint}}"),
                    unit="reqps",
                ),
                graph(
                    "p95 latency by route",
                    Q(p(0.95, "http_request_duration_seconds", by="endpoint"), "{{endpoint}}"),
                    unit="s",
                    steps=[(1, ORANGE), (1.5, RED)],
                ),
                graph(
                    "Errors by type",
                    Q("sum by (endpoint, error_type) (rate(http_errors_total[5m]))", "{{endpoint}} {{error_type}}"),
                    unit="reqps",
                ),
                graph(
                    "429 by route",
                    Q("sum by (endpoint) (rate(http_requests_429_total[5m]))", "{{endpoint}}"),
                    unit="reqps",
                ),
                graph("In progress", Q("sum by (method) (http_requests_in_progress)", "{{method}}")),
                graph(
                    "Error rate", Q(ERROR_RATE, "5xx share"), unit="percentunit", steps=[(0.01, ORANGE), (0.03, RED)]
                ),
            ],
        ),
        (
            "Chat",
            [
                graph(
                    "Completions by provider and model",
                    Q("sum by (provider, model) (rate(chat_completions_total[5m]))", "{{provider}} {{model}}"),
                    unit="reqps",
                ),
                graph(
                    "Completion errors",
                    Q(
                        "sum by (provider, error_type) (rate(chat_completion_errors_total[5m]))",
                        "{{provider}} {{error_type}}",
                    ),
                    unit="reqps",
                ),
                graph(
                    "Tokens/s",
                    Q(
                        "sum by (provider, token_type) (rate(chat_completion_tokens_total[5m]))",
                        "{{provider}} {{token_type}}",
                    ),
                ),
                graph(
                    "Secrets detected",
                    Q("sum by (location) (increase(goblin_security_secrets_detected_total[1h]))", "{{location}}"),
                    description="Per hour, by where they were found.",
                ),
            ],
        ),
        (
            "Backends",
            [
                graph(
                    "Health (1 = up)", Q("min by (service_name) (service_health_status)", "{{service_name}}"), width=24
                )
            ],
        ),
        process_row("gateway"),
    ]
    return board("goblin-gateway", "Goblin / Gateway", "HTTPS API: traffic, latency, errors, chat.", rows)


def router() -> model.Dashboard:
    breaker = {"0": ("closed", GREEN), "1": ("half-open", ORANGE), "2": ("open", RED)}
    rows = [
        (
            "Providers",
            [
                graph(
                    "p95 latency by provider",
                    Q(p(0.95, "provider_latency_seconds", 'operation="chat"', by="provider"), "{{provider}}"),
                    unit="s",
                ),
                graph(
                    "p95 time to first token by provider",
                    Q(p(0.95, "provider_latency_seconds", 'operation="chat_ttft"', by="provider"), "{{provider}}"),
                    unit="s",
                ),
                graph(
                    "Provider errors",
                    Q(
                        "sum by (provider, code) (rate(goblin_router_provider_errors_total[5m]))",
                        "{{provider}} {{code}}",
                    ),
                    unit="reqps",
                ),
                graph(
                    "Requests by provider and outcome",
                    Q(
                        "sum by (provider, outcome) (rate(goblin_router_requests_total[5m]))",
                        "{{provider}} {{outcome}}",
                    ),
                    unit="reqps",
                ),
                graph(
                    "Fallbacks",
                    Q(
                        "sum by (from_provider, to_provider) (rate(goblin_router_fallbacks_total[5m]))",
                        "{{from_provider}} → {{to_provider}}",
                    ),
                    unit="reqps",
                ),
                graph(
                    "Fallback rate",
                    Q(FALLBACK_RATE, "fallbacks"),
                    unit="percentunit",
                    steps=[(0.02, ORANGE), (0.05, RED)],
                ),
                kpi(
                    "Breakers",
                    Q("max by (provider) (goblin_router_circuit_state)", "{{provider}}"),
                    unit="short",
                    steps=[(1, ORANGE), (2, RED)],
                    mappings=breaker,
                    width=12,
                ),
                graph(
                    "Retries",
                    Q("sum by (provider) (rate(goblin_router_retries_total[5m]))", "{{provider}}"),
                    unit="reqps",
                ),
            ],
        ),
        (
            "Cost and budget",
            [
                kpi("Cost, 24 h", Q(DAILY_COST), unit="currencyUSD", steps=[(25, ORANGE), (50, RED)], width=6),
                kpi("Budget used, 24 h", Q(BUDGET_USED), unit="percentunit", steps=[(0.8, ORANGE), (1, RED)], width=6),
                kpi("Daily budget", Q("max(goblin_router_daily_budget_usd)"), unit="currencyUSD", width=6),
                kpi(
                    "Budget refusals, 24 h",
                    Q("sum(increase(goblin_router_budget_refusals_total[1d]))"),
                    unit="short",
                    steps=[(1, ORANGE)],
                    width=6,
                ),
                graph(
                    "Spend per hour by model",
                    Q(
                        "sum by (provider, model) (increase(goblin_router_cost_usd_total[1h]))",
                        "{{provider}} {{model}}",
                    ),
                    unit="currencyUSD",
                    stacked=True,
                ),
                graph(
                    "Tokens/s by provider",
                    Q("sum by (provider, kind) (rate(goblin_router_tokens_total[5m]))", "{{provider}} {{kind}}"),
                ),
            ],
        ),
        (
            "Router",
            [
                graph("Cache hits", Q("sum(rate(goblin_router_cache_hits_total[5m]))", "hits"), unit="reqps", width=8),
                graph(
                    "Router overhead p99",
                    Q(p(0.99, "goblin_router_overhead_seconds", by="operation"), "{{operation}}"),
                    unit="s",
                    width=8,
                ),
                graph(
                    "Sync errors",
                    Q("sum(rate(goblin_router_budget_sync_errors_total[5m]))", "budget sync"),
                    Q("sum(rate(goblin_router_cache_errors_total[5m]))", "cache"),
                    unit="reqps",
                    width=8,
                ),
            ],
        ),
        grpc_row("Router"),
        process_row("router"),
    ]
    return board("goblin-router", "Goblin / Router", "Providers, fallbacks, breakers, cost.", rows)


def inference() -> model.Dashboard:
    rows = [
        (
            "Model",
            [
                kpi(
                    "Model loaded",
                    Q("min(goblin_inference_model_loaded)"),
                    unit="short",
                    base=RED,
                    steps=[(1, GREEN)],
                    mappings={"0": ("loading", RED), "1": ("loaded", GREEN)},
                    width=6,
                ),
                kpi(
                    "Queue",
                    Q("sum(goblin_inference_queue_length)"),
                    unit="short",
                    steps=[(25, ORANGE), (50, RED)],
                    width=6,
                ),
                kpi(
                    "Queue / capacity",
                    Q("max(goblin_inference_queue_length / goblin_inference_queue_capacity)"),
                    unit="percentunit",
                    steps=[(0.8, ORANGE), (1, RED)],
                    width=6,
                ),
                kpi(
                    "Tokens/s",
                    Q('sum(rate(goblin_inference_tokens_total{kind="completion"}[5m]))'),
                    unit="short",
                    width=6,
                ),
                graph(
                    "Queue and batch",
                    Q("sum by (instance) (goblin_inference_queue_length)", "queued {{instance}}"),
                    Q("sum by (instance) (goblin_inference_queue_capacity)", "capacity {{instance}}"),
                    Q("sum by (instance) (goblin_inference_active_sequences)", "decoding {{instance}}"),
                    description="Decoding = the sequences in the current batch.",
                ),
                graph(
                    "Time to first token",
                    Q(p(0.5, "goblin_inference_time_to_first_token_seconds"), "p50"),
                    Q(p(0.95, "goblin_inference_time_to_first_token_seconds"), "p95"),
                    unit="s",
                ),
                graph(
                    "Latency p95 by operation",
                    Q(p(0.95, "goblin_inference_latency_seconds", by="operation"), "{{operation}}"),
                    unit="s",
                ),
                graph("Tokens/s by kind", Q("sum by (kind) (rate(goblin_inference_tokens_total[5m]))", "{{kind}}")),
            ],
        ),
        grpc_row("Inference"),
        process_row("inference"),
    ]
    return board("goblin-inference", "Goblin / Inference", "The local model: queue, TTFT, tokens/s, batch.", rows)


def rag() -> model.Dashboard:
    rows = [
        (
            "Queries",
            [
                kpi(
                    "Hit rate",
                    Q(RAG_HIT_RATE),
                    unit="percentunit",
                    base=RED,
                    steps=[(0.6, ORANGE), (0.7, GREEN)],
                    width=8,
                ),
                kpi("Query p95", Q(p(0.95, "goblin_rag_query_latency_seconds")), unit="s", width=8),
                kpi("Queries/s", Q("sum(rate(goblin_rag_queries_total[5m]))"), unit="reqps", width=8),
                graph(
                    "Queries by hit",
                    Q("sum by (hit) (rate(goblin_rag_queries_total[5m]))", "hit={{hit}}"),
                    unit="reqps",
                    stacked=True,
                ),
                graph(
                    "Query latency",
                    Q(p(0.5, "goblin_rag_query_latency_seconds"), "p50"),
                    Q(p(0.95, "goblin_rag_query_latency_seconds"), "p95"),
                    unit="s",
                ),
                graph(
                    "Best score (median)",
                    Q(p(0.5, "goblin_rag_best_score", window="30m"), "median best cosine"),
                    description="Queries whose best score is under GOBLIN_RAG_MIN_SCORE count as misses.",
                ),
                graph(
                    "Hit rate",
                    Q(RAG_HIT_RATE, "hit rate"),
                    unit="percentunit",
                    base=RED,
                    steps=[(0.6, ORANGE), (0.7, GREEN)],
                ),
            ],
        ),
        (
            "Ingestion",
            [
                graph("Chunks indexed/s", Q("sum(rate(goblin_rag_chunks_indexed_total[5m]))", "chunks"), unit="short"),
                graph(
                    "Documents ingested",
                    Q("sum by (outcome) (increase(goblin_rag_documents_ingested_total[1h]))", "{{outcome}}"),
                    description="Per hour, by outcome.",
                ),
            ],
        ),
        grpc_row("Rag"),
        process_row("rag"),
    ]
    return board("goblin-rag", "Goblin / RAG", "Ingestion, query latency, hit rate.", rows)


def executor() -> model.Dashboard:
    rows = [
        (
            "Tasks",
            [
                kpi("Queued", Q("max(goblin_executor_queue_depth)"), unit="short", steps=[(50, ORANGE)], width=8),
                kpi(
                    "Succeeded, 24 h",
                    Q('sum(increase(goblin_executor_tasks_total{status="succeeded"}[1d]))'),
                    unit="short",
                    width=8,
                ),
                kpi(
                    "Failed, 24 h",
                    Q('sum(increase(goblin_executor_tasks_total{status!="succeeded"}[1d]))'),
                    unit="short",
                    steps=[(1, ORANGE)],
                    width=8,
                ),
                graph("Queue", Q("max(goblin_executor_queue_depth)", "queued"), steps=[(50, ORANGE)]),
                graph(
                    "Outcomes",
                    Q("sum by (status) (rate(goblin_executor_tasks_total[5m]))", "{{status}}"),
                    unit="reqps",
                    stacked=True,
                ),
                graph(
                    "Duration",
                    Q(p(0.5, "goblin_executor_task_duration_seconds"), "p50"),
                    Q(p(0.95, "goblin_executor_task_duration_seconds"), "p95"),
                    unit="s",
                ),
                graph(
                    "Wait before start",
                    Q(p(0.5, "goblin_executor_start_latency_seconds"), "p50"),
                    Q(p(0.95, "goblin_executor_start_latency_seconds"), "p95"),
                    unit="s",
                ),
                # No gauge of running tasks: each process's starts (start latency observed when a
                # task's process starts) minus its ends (duration observed when it exits).
                graph(
                    "Running",
                    Q(
                        "sum by (instance) (goblin_executor_start_latency_seconds_count"
                        " - goblin_executor_task_duration_seconds_count)",
                        "{{instance}}",
                    ),
                    description="Task processes started and not yet exited, per executor replica.",
                    width=24,
                ),
            ],
        ),
        grpc_row("Executor"),
        process_row("executor"),
    ]
    return board("goblin-executor", "Goblin / Executor", "Task queue, running, outcomes, durations.", rows)


def auth() -> model.Dashboard:
    rows = [
        (
            "Sign-ins",
            [
                kpi(
                    "Failed sign-ins, 1 h",
                    Q('sum(increase(goblin_auth_sign_ins_total{outcome!="success"}[1h]))'),
                    unit="short",
                    steps=[(10, ORANGE), (100, RED)],
                    width=8,
                ),
                kpi(
                    "Lockouts, 24 h",
                    Q('sum(increase(goblin_auth_security_events_total{event="account_locked"}[1d]))'),
                    unit="short",
                    steps=[(0.5, ORANGE), (1.5, RED)],
                    width=8,
                ),
                kpi(
                    "Security events, 24 h",
                    Q(SECURITY_EVENTS),
                    unit="short",
                    steps=[(0.5, ORANGE), (1.5, RED)],
                    width=8,
                ),
                graph(
                    "Sign-ins by method and outcome",
                    Q("sum by (method, outcome) (rate(goblin_auth_sign_ins_total[5m]))", "{{method}} {{outcome}}"),
                    unit="reqps",
                ),
                graph(
                    "Credentials checked",
                    Q("sum by (kind, outcome) (rate(goblin_auth_authentications_total[5m]))", "{{kind}} {{outcome}}"),
                    unit="reqps",
                ),
                graph(
                    "Security events",
                    Q("sum by (event) (increase(goblin_auth_security_events_total[1h]))", "{{event}}"),
                    description="Per hour.",
                ),
                graph(
                    "Passkeys",
                    Q(
                        'sum by (outcome) (rate(goblin_auth_sign_ins_total{method="passkey"}[5m]))',
                        "sign-in {{outcome}}",
                    ),
                    Q("sum by (change) (increase(goblin_auth_passkeys_total[1h]))", "{{change}} per hour"),
                ),
                graph(
                    "Signing-key rotations",
                    Q("sum(increase(goblin_auth_signing_key_rotations_total[1d]))", "per day"),
                    width=24,
                ),
            ],
        ),
        grpc_row("Auth"),
        process_row("auth"),
    ]
    return board("goblin-auth", "Goblin / Auth", "Logins, failures, lockouts, passkeys.", rows)


DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {
    "overview": overview,
    "gateway": gateway,
    "router": router,
    "inference": inference,
    "rag": rag,
    "executor": executor,
    "auth": auth,
}


def render(board: model.Dashboard) -> str:
    """The dashboard as the JSON file holds it (stable: sorted keys, two-space indent, final newline)."""
    return (
        json.dumps(json.loads(json.dumps(board, cls=JSONEncoder)), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def expected_files() -> dict[Path, str]:
    """Every dashboard file this source builds, with its content."""
    return {DASHBOARDS_DIR / f"{name}.json": render(build()) for name, build in DASHBOARDS.items()}


def write() -> list[Path]:
    """(Re)write the chart's dashboards; removes files of dashboards no longer built."""
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    files = expected_files()
    for stale in set(DASHBOARDS_DIR.glob("*.json")) - set(files):
        stale.unlink()
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def stale_files() -> list[str]:
    """Names of committed dashboard files that differ from, lack, or add to what the source builds."""
    files = expected_files()
    present = set(DASHBOARDS_DIR.glob("*.json"))
    differ = [p.name for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    return sorted(differ + [p.name for p in present - set(files)])


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        if stale:
            print(f"stale dashboards (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    for path in write():
        print(path.relative_to(CHART_DIR.parents[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
