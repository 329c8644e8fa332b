"""The chart's Grafana dashboards (deploy/helm/goblin/dashboards/*.json) are what goblin_tools/dashboards.py
builds, load in grafana-foundation-sdk's model, hold PromQL that parses, and read only metrics the
running services export.

The last check starts the suite (tests/suite.py's ``suite``), sends a small mixed workload (an ingest,
a RAG chat on the local model, a RAG query, a failed sign-in, a task) and scrapes every service's
metrics: each metric name a panel uses must be offered by some service. A SPEC.md metric a service
does not export yet stays in the dashboards: the test names it, and passes once the service does.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from goblin_tools import dashboards, deploy_tools
from goblin_tools.suite import SERVICES, Suite
from tests.deploy.manifests import parse
from tests.deploy.test_observability import PROMETHEUS_SERIES, metric_names
from tests.integration.docqa_support import HANDBOOK, ingest
from tests.observability.obsdash_support import (  # noqa: F401 (fixtures)
    exposition_names,
    helm_fixture,
    promtool_fixture,
)

FILES = sorted(dashboards.DASHBOARDS_DIR.glob("*.json"))
COLLECTION = "dashboards-handbook"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in board.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def queries() -> list[tuple[str, str]]:
    """(where, expr) of every query of every dashboard."""
    return [
        (f"{path.name} / {panel['title']} / {target['refId']}", target["expr"])
        for path in FILES
        for panel in panels(load(path))
        for target in panel.get("targets", [])
    ]


def test_there_is_an_overview_and_one_dashboard_per_service() -> None:
    assert {p.stem for p in FILES} == {"overview", "gateway", *SERVICES}


def test_the_committed_json_is_what_the_source_builds() -> None:
    assert dashboards.stale_files() == [], "run `make dashboards` and commit the result"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_dashboard_loads_in_the_sdk_model(path: Path) -> None:
    """Parsed into the SDK's Dashboard and written back, nothing is lost or added: every key is one the
    model knows."""
    data = load(path)
    board = Dashboard.from_json(data)
    assert json.loads(json.dumps(board, cls=JSONEncoder)) == data
    assert board.uid == f"goblin-{path.stem}" and board.title.startswith("Goblin / ")
    ids = [panel["id"] for panel in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(data):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_uids_are_unique() -> None:
    uids = [load(path)["uid"] for path in FILES]
    assert len(uids) == len(set(uids))


def test_every_panel_query_parses(promtool_bin: str, tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule; a failure names the panel."""
    found = queries()
    rules = [{"record": f"goblin_dashboard_query_{i}", "expr": expr} for i, (_, expr) in enumerate(found)]
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = run(promtool_bin, "check", "rules", str(path))
    if result.returncode != 0:
        # One at a time, to say which panel's query is wrong.
        bad = []
        for i, (where, expr) in enumerate(found):
            single = tmp_path / f"query_{i}.yaml"
            single.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [rules[i]]}]}))
            one = run(promtool_bin, "check", "rules", str(single))
            if one.returncode != 0:
                bad.append(f"{where}: {expr}: {one.stdout.strip()} {one.stderr.strip()}")
        pytest.fail("queries promtool cannot parse:\n" + "\n".join(bad))


def test_the_chart_renders_one_config_map_per_dashboard(helm_bin: str) -> None:
    objects = parse(deploy_tools.template({"metrics": {"grafanaDashboards": {"enabled": True}}}))
    maps = {
        o["metadata"]["name"]: o for o in objects if o.get("metadata", {}).get("labels", {}).get("grafana_dashboard")
    }
    assert sorted(maps) == [f"goblin-dashboard-{p.stem}" for p in FILES]
    for path in FILES:
        data = maps[f"goblin-dashboard-{path.stem}"]["data"]
        assert json.loads(data[path.name]) == load(path), path.name


# -- against the running suite --------------------------------------------------------------------------


def scrape(suite: Suite, service: str) -> str:
    if service == "gateway":
        with suite.admin_client() as client:
            reply = client.get("/metrics")
    else:
        reply = httpx.get(suite.metrics_url(service), timeout=10)
    assert reply.status_code == 200, f"{service} /metrics: {reply.status_code}"
    return reply.text


@pytest.fixture(scope="module")
def exported(suite: Suite) -> dict[str, set[str]]:
    """service -> the series names its /metrics offers, after a small mixed workload."""
    with suite.admin_client() as admin:
        admin.timeout = httpx.Timeout(300)
        ingest(admin, COLLECTION, HANDBOOK)
        chat = {
            "model": "local",
            "messages": [{"role": "user", "content": "How often do the database backups run?"}],
            "max_tokens": 8,
            "goblin": {"rag": {"collection": COLLECTION, "top_k": 2}},
        }
        reply = admin.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
        reply = admin.post("/api/query", json={"query": "When do backups run?", "collection": COLLECTION})
        assert reply.status_code == 200, reply.text
        task = admin.post("/v1/tasks", json={"goblin": "hello", "args": {"name": "dashboards"}})
        assert task.status_code == 202, task.text
        deadline = time.monotonic() + 60
        while admin.get(f"/v1/tasks/{task.json()['id']}").json()["status"] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline, "the task did not finish"
            time.sleep(0.2)
    with suite.client() as anonymous:
        refused = anonymous.post(
            "/auth/login", json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "not a password"}
        )
        assert refused.status_code == 401, refused.text
    return {service: exposition_names(scrape(suite, service)) for service in ("gateway", *SERVICES)}


def test_the_workload_moved_every_service(exported: dict[str, set[str]]) -> None:
    """The scrape is real: each service offers its own metrics (and the process collector's)."""
    for service, names in exported.items():
        assert "process_resident_memory_bytes" in names, service
        # What the MemoryHigh and CertificateExpiry alerts divide by and compare with, in every process.
        assert "goblin_process_memory_limit_bytes" in names, service
        assert "goblin_tls_certificate_not_after_timestamp_seconds" in names, service
    assert "goblin_router_daily_budget_usd" in exported["router"]
    assert "http_requests_total" in exported["gateway"]
    assert "goblin_rag_queries_total" in exported["rag"]


def test_every_metric_the_dashboards_use_is_exported(exported: dict[str, set[str]]) -> None:
    offered = set().union(*exported.values()) | PROMETHEUS_SERIES
    missing: dict[str, list[str]] = {}
    for where, expr in queries():
        for name in sorted(metric_names(expr) - offered):
            missing.setdefault(name, []).append(where)
    assert not missing, "metrics the dashboards use that no running service exports:\n" + "\n".join(
        f"  {name}: {', '.join(places[:3])}{' ...' if len(places) > 3 else ''}"
        for name, places in sorted(missing.items())
    )
