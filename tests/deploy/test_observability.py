"""Every metric the chart's alert rules and Grafana dashboards use is one some service exports.

The rules (``deploy/helm/goblin/rules/*.yaml``) and dashboards (``dashboards/*.json``) are written by the
observability work; this test holds them to the code from the day they land."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import ProcessCollector

from goblin_tools import deploy_tools

SERVICES_DIR = deploy_tools.ROOT / "services"
# PromQL words that look like metric names but are not.
PROMQL_WORDS = {
    *"sum rate irate increase avg min max count by without on ignoring group_left group_right offset bool and or "
    "unless histogram_quantile topk bottomk quantile stddev stdvar abs absent ceil floor round clamp_min "
    "clamp_max delta deriv label_replace label_join time vector scalar sort sort_desc le inf nan "
    "avg_over_time max_over_time min_over_time sum_over_time count_over_time last_over_time changes resets".split()
}
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
# Series no service declares yet every target has: Prometheus's own scrape health, and the process
# collector prometheus_client registers in every process (asked, not listed: what it exports here).
PROMETHEUS_SERIES = {"up"}
PROCESS_SERIES = {metric.name for metric in ProcessCollector(registry=None).collect()}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside braces and strings, not PromQL words,
    not durations."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", n)}


def exported_names() -> str:
    """All string literals in the services' code, where metrics are declared."""
    return "\n".join(p.read_text(encoding="utf-8") for p in SERVICES_DIR.rglob("*.py"))


def is_exported(name: str, source: str) -> bool:
    candidates = {name} | {name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)}
    if candidates & (PROMETHEUS_SERIES | PROCESS_SERIES):
        return True
    return any(f'"{c}"' in source for c in candidates)


def chart_expressions(chart: Path = deploy_tools.CHART_DIR) -> list[tuple[str, str]]:
    found = []
    for path in sorted((chart / "rules").glob("*.yaml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                found.append((f"{path.name}:{rule.get('alert') or rule.get('record')}", str(rule["expr"])))

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append((where, node["expr"]))
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in sorted((chart / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


def test_the_extractor_finds_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{endpoint!="/health"}[5m])))'
        " / ignoring(x) sum(goblin_router_cost_usd_total) > 0"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "goblin_router_cost_usd_total"}
    source = exported_names()
    assert is_exported("http_request_duration_seconds_bucket", source)
    assert is_exported("goblin_router_cost_usd_total", source)
    assert not is_exported("goblin_no_such_metric_total", source)


def test_every_metric_in_rules_and_dashboards_is_exported() -> None:
    source = exported_names()
    missing = [
        (where, name)
        for where, expr in chart_expressions()
        for name in metric_names(expr)
        if not is_exported(name, source)
    ]
    assert not missing, f"used but exported by no service: {missing}"
