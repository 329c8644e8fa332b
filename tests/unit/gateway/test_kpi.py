"""The KPI document's arithmetic: thresholds, histogram quantiles, rates, and which traffic counts."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from goblin_tools.top import format_value, frame
from services.gateway.kpi import (
    THRESHOLDS,
    KpiInputs,
    RateMeter,
    Samples,
    build_document,
    histogram_quantile,
)
from services.gateway.kpi_settings import grpc_host

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kpi_id", "value", "status"),
    [
        ("p95_latency_s", 0.9, "ok"),
        ("p95_latency_s", 1.2, "warning"),
        ("p95_latency_s", 1.6, "critical"),
        ("error_rate", 0.02, "warning"),
        ("error_rate", 0.031, "critical"),
        ("rag_hit_rate", 0.75, "ok"),
        ("rag_hit_rate", 0.65, "warning"),
        ("rag_hit_rate", 0.5, "critical"),
        ("fallback_rate", 0.03, "warning"),
        ("queue_depth", 51, "critical"),
        ("daily_cost_usd", 30, "warning"),
        ("daily_cost_usd", 50.01, "critical"),
        ("security_violations", 0, "ok"),
        ("security_violations", 1, "warning"),
        ("security_violations", 2, "critical"),
        ("budget_used", 0.85, "warning"),
        ("p95_latency_s", None, "unknown"),
    ],
)
def test_thresholds_are_the_design_notes(kpi_id: str, value: float | None, status: str) -> None:
    assert THRESHOLDS[kpi_id].status(value) == status


def test_quantile_matches_prometheus_interpolation() -> None:
    # 100 observations: 50 under 0.1 s, 40 more under 0.5 s, 10 more under 1 s.
    buckets = {0.1: 50, 0.5: 90, 1.0: 100, math.inf: 100}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.95, {0.1: 0, math.inf: 0}) is None
    assert histogram_quantile(0.99, {0.1: 1, math.inf: 10}) == pytest.approx(0.1)  # past the last bucket


def test_samples_from_a_real_exposition_sum_across_labels() -> None:
    registry = CollectorRegistry()
    requests = Counter("http_requests_total", "", ["endpoint", "status_code"], registry=registry)
    duration = Histogram("http_request_duration_seconds", "", ["endpoint"], buckets=(0.1, 1.0), registry=registry)
    requests.labels("/v1/chat/completions", "200").inc(8)
    requests.labels("/v1/chat/completions", "503").inc(2)
    requests.labels("/health", "200").inc(1000)
    for _ in range(9):
        duration.labels("/v1/chat/completions").observe(0.05)
    duration.labels("/health").observe(5)
    samples = Samples.from_families(text_string_to_metric_families(generate_latest(registry).decode()))
    doc = build_document(
        KpiInputs(gateway=samples, services={}, health=[], providers=[], usage_all=None, tenants=[], tokens_per_s=None),
        started_at=0,
        now=60,
    )
    kpis = {k["id"]: k for k in doc["kpis"]}
    # Probes and operator pages are not traffic: /health's thousand answers and its 5 s do not count.
    assert doc["traffic"]["requests"] == 10 and doc["traffic"]["errors_5xx"] == 2
    assert kpis["error_rate"]["value"] == pytest.approx(0.2) and kpis["error_rate"]["status"] == "critical"
    assert kpis["p95_latency_s"]["value"] < 0.1
    assert kpis["rag_hit_rate"]["status"] == "unknown" and kpis["daily_cost_usd"]["value"] is None


def test_rag_fallback_queue_and_security_come_from_their_services() -> None:
    rag, inference, auth, router = Samples(), Samples(), Samples(), Samples()
    rag.add("goblin_rag_queries_total", {"hit": "true"}, 3)
    rag.add("goblin_rag_queries_total", {"hit": "false"}, 1)
    rag.add("goblin_security_secrets_detected_total", {"location": "document_indexing"}, 2)
    inference.add("goblin_inference_queue_length", {}, 40)
    inference.add("goblin_inference_queue_capacity", {}, 48)
    auth.add("goblin_auth_security_events_total", {"event": "account_locked"}, 1)
    auth.add("goblin_auth_security_events_total", {"event": "quota_exhausted"}, 5)
    doc = build_document(
        KpiInputs(
            gateway=Samples(),
            services={"rag": rag, "inference": inference, "auth": auth, "router": router},
            health=[],
            providers=[],
            usage_all={"cost_usd": 12.5, "requests": 50, "fallbacks": 2},
            tenants=[{"id": "t", "name": "t", "cost_usd": 9.0, "budget_usd": 10.0, "used": 0.9}],
        ),
        started_at=0,
    )
    kpis = {k["id"]: k for k in doc["kpis"]}
    assert kpis["rag_hit_rate"]["value"] == 0.75 and kpis["rag_hit_rate"]["status"] == "ok"
    assert kpis["fallback_rate"]["value"] == 0.04 and kpis["fallback_rate"]["status"] == "warning"
    assert kpis["queue_depth"]["value"] == 40 and kpis["queue_depth"]["status"] == "warning"
    assert kpis["queue_used"]["status"] == "critical"  # 83 % of the capacity
    assert kpis["security_violations"]["value"] == 3  # quota exhaustion is shown, not counted
    assert doc["security"]["auth_events"] == {"account_locked": 1, "quota_exhausted": 5}
    assert kpis["budget_used"]["value"] == 0.9 and kpis["budget_used"]["status"] == "warning"
    assert kpis["daily_cost_usd"]["status"] == "ok"


def test_rate_meter_measures_between_readings_and_survives_a_reset() -> None:
    meter = RateMeter(window_s=60, min_gap_s=1)
    assert meter.observe(100, now=0) is None
    assert meter.observe(150, now=10) == pytest.approx(5.0)
    assert meter.observe(150.5, now=10.5) == pytest.approx(5.0)  # too soon: the last rate stands
    assert meter.observe(10, now=20) is None  # the counter went back: the process restarted
    assert meter.observe(30, now=30) == pytest.approx(2.0)  # measured again from the restart
    assert meter.observe(630, now=100) == pytest.approx(600 / 70)  # readings older than the window go


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("127.0.0.1:50051", "127.0.0.1"),
        ("goblin-router:50051", "goblin-router"),
        ("dns:///goblin-rag.ns.svc:50053", "goblin-rag.ns.svc"),
        ("[::1]:50052", "[::1]"),
        ("unix:/run/goblin/inference.sock", "127.0.0.1"),
    ],
)
def test_metrics_host_is_the_grpc_host(address: str, host: str) -> None:
    assert grpc_host(address) == host


def test_goblin_top_frame_shows_every_kpi_and_hostile_names_as_text() -> None:
    doc = build_document(
        KpiInputs(
            gateway=Samples(),
            services={},
            health=[{"name": "router", "status": "NOT_SERVING", "latency_ms": 3.0}],
            providers=[{"name": "[bold]x[/bold]", "configured": True, "circuit": "open", "consecutive_failures": 4}],
            usage_all=None,
            tenants=[{"id": "t", "name": "[red]evil[/red]", "cost_usd": None, "budget_usd": 0, "used": None}],
            errors=["rag metrics: ConnectError"],
        ),
        started_at=0,
    )
    console = Console(width=200, record=True, color_system=None)
    console.print(frame(doc))
    text = console.export_text()
    for k in doc["kpis"]:
        assert k["label"] in text
    assert "[red]evil[/red]" in text and "[bold]x[/bold]" in text and "NOT_SERVING" in text
    assert "Not answering: rag metrics: ConnectError" in text
    assert format_value(0.1234, "ratio") == "12.3 %" and format_value(None, "s") == "–"
