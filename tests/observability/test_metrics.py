"""Every metric SPEC.md names is exported by the service that owns it, and no label value is unbounded.

The list below is the contract (SPEC.md, "Metrics that dashboards and alerts use"), plus the auth
metrics its dashboard reads. After a mixed workload (ingestion, RAG chat on a remote and on the local
model, a RAG query, a task, sign-ins good and bad, refusals) every service of the running suite is
scraped: each name must be there, the workload's must have samples, and no label value may be a user
id, an email, a key, an id-bearing path, a prompt or any other value that grows with use.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from goblin_tools.suite import Suite
from tests.integration.auth_support import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.integration.docqa_support import new_key
from tests.observability.conftest import COLLECTION, REMOTE_MODEL

pytestmark = pytest.mark.integration  # the whole suite runs: with `make test-integration`

SPEC_METRICS: dict[str, set[str]] = {
    "gateway": {
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "http_errors_total",
        "http_requests_429_total",
        "chat_completions_total",
        "chat_completion_tokens_total",
        "chat_completion_errors_total",
        "service_health_status",
        "goblin_security_secrets_detected_total",
    },
    "router": {
        "provider_latency_seconds",
        "goblin_router_fallbacks_total",
        "goblin_router_cost_usd_total",
        "goblin_router_cache_hits_total",
    },
    "inference": {
        "goblin_inference_queue_length",
        "goblin_inference_queue_capacity",
        "goblin_inference_latency_seconds",
        "goblin_inference_time_to_first_token_seconds",
        "goblin_inference_tokens_total",
        "goblin_inference_model_loaded",
    },
    "rag": {"goblin_rag_queries_total", "goblin_rag_query_latency_seconds", "goblin_rag_chunks_indexed_total"},
    "executor": {
        "goblin_executor_tasks_total",
        "goblin_executor_task_duration_seconds",
        "goblin_executor_queue_depth",
    },
    # Not in SPEC.md's list: what the auth dashboard shows (logins, failures, lockouts, passkeys).
    "auth": {"goblin_auth_sign_ins_total", "goblin_auth_security_events_total", "goblin_auth_passkeys_total"},
}
# What the workload below must have moved (a sample with a value > 0 and these labels).
EXERCISED: dict[str, list[tuple[str, dict[str, str]]]] = {
    "gateway": [
        ("http_requests_total", {"endpoint": "/v1/chat/completions", "status_code": "200"}),
        ("http_request_duration_seconds_count", {"endpoint": "/v1/chat/completions"}),
        ("http_errors_total", {"endpoint": "/v1/tasks/{task_id}"}),
        ("chat_completions_total", {"provider": "acme"}),
        ("chat_completion_tokens_total", {"provider": "acme", "token_type": "completion"}),
        ("service_health_status", {"service_name": "rag"}),
    ],
    "router": [
        ("provider_latency_seconds_count", {"provider": "acme", "operation": "chat"}),
        ("goblin_router_cost_usd_total", {"provider": "acme"}),
    ],
    "inference": [
        ("goblin_inference_latency_seconds_count", {}),
        ("goblin_inference_time_to_first_token_seconds_count", {}),
        ("goblin_inference_tokens_total", {}),
        ("goblin_inference_model_loaded", {}),
        ("goblin_inference_queue_capacity", {}),
    ],
    "rag": [
        ("goblin_rag_queries_total", {"hit": "true"}),
        ("goblin_rag_query_latency_seconds_count", {}),
        ("goblin_rag_chunks_indexed_total", {}),
    ],
    "executor": [
        ("goblin_executor_tasks_total", {"status": "succeeded"}),
        ("goblin_executor_task_duration_seconds_count", {}),
    ],
    "auth": [
        ("goblin_auth_sign_ins_total", {"method": "password", "outcome": "success"}),
        ("goblin_auth_sign_ins_total", {"method": "password", "outcome": "failure"}),
    ],
}
# Label values that are numbers by nature: histogram buckets and summary quantiles.
NUMERIC_LABELS = {"le", "quantile"}
MAX_VALUES_PER_LABEL = 60
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
LONG_HEX = re.compile(r"[0-9a-f]{16,}", re.I)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.I)


def scrape(suite: Suite, service: str) -> str:
    if service == "gateway":
        with suite.admin_client() as client:
            reply = client.get("/metrics")
    else:
        reply = httpx.get(suite.metrics_url(service), timeout=10)
    assert reply.status_code == 200, f"{service}: {reply.status_code}"
    return reply.text


def families(text: str) -> tuple[set[str], list[Sample]]:
    """The metric names a scrape declares (counters under both their names) and all its samples."""
    names: set[str] = set()
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        samples.extend(family.samples)
    return names, samples


@pytest.fixture(scope="module")
def workload(obs_suite: Suite, obs_admin: httpx.Client) -> dict[str, str]:
    """A mixed workload through the gateway; returns the values no label may hold."""
    marker = f"okapi-{uuid.uuid4().hex[:10]}"
    key = new_key(obs_admin, ["chat", "rag"])
    rag = {"rag": {"collection": COLLECTION, "top_k": 3}}
    with obs_suite.client(headers={"Authorization": f"Bearer {key}"}, timeout=300) as user:
        for model in (REMOTE_MODEL, "local"):
            question = f"How often do the Postgres database backups run? {marker}"
            body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
            reply = user.post("/v1/chat/completions", json={**body, "goblin": rag})
            assert reply.status_code == 200, reply.text
        reply = user.post("/api/query", json={"query": f"When do backups run? {marker}", "collection": COLLECTION})
        assert reply.status_code == 200, reply.text
        assert user.post("/v1/chat/completions", json={"model": "nope/absent", "messages": []}).status_code >= 400
    task = obs_admin.post("/v1/tasks", json={"goblin": "hello", "args": {"name": marker}})
    assert task.status_code == 202, task.text
    task_id = task.json()["id"]
    deadline = time.monotonic() + 30
    while obs_admin.get(f"/v1/tasks/{task_id}").json()["status"] not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline, "the task did not finish"
        time.sleep(0.2)
    # An id that does not exist: the error is counted under the route's template, never the path.
    assert obs_admin.get(f"/v1/tasks/{uuid.uuid4().hex}").status_code == 404
    with obs_suite.client() as anonymous:
        bad = anonymous.post("/auth/login", json={"email": f"{marker}@example.com", "password": "wrong password!"})
        assert bad.status_code == 401, bad.text
        wrong = anonymous.post("/auth/login", json={"email": ADMIN_EMAIL, "password": f"not it {marker}"})
        assert wrong.status_code == 401, wrong.text
        right = anonymous.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert right.status_code == 200, right.text
    me = obs_admin.get("/auth/me").json()
    return {"marker": marker, "key": key, "task_id": task_id, "user_id": me["user_id"], "email": me["email"]}


@pytest.mark.parametrize("service", sorted(SPEC_METRICS))
def test_every_spec_metric_is_exported_by_its_service_after_a_workload(
    obs_suite: Suite, workload: dict[str, str], service: str
) -> None:
    names, samples = families(scrape(obs_suite, service))
    missing = SPEC_METRICS[service] - names
    assert not missing, f"{service} does not export {sorted(missing)}"
    for name, labels in EXERCISED[service]:
        moved = [
            s
            for s in samples
            if s.name == name and s.value > 0 and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert moved, f"{service}: no {name}{labels} after the workload"


@pytest.mark.parametrize("service", sorted(SPEC_METRICS))
def test_no_label_value_is_unbounded(obs_suite: Suite, workload: dict[str, str], service: str) -> None:
    _, samples = families(scrape(obs_suite, service))
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sample in samples:
        for label, value in sample.labels.items():
            if label in NUMERIC_LABELS:
                continue
            where = f"{service} {sample.name}{{{label}={value!r}}}"
            for what, secret in workload.items():
                assert secret not in value, f"{what} in {where}"
            assert not UUID.search(value) and not LONG_HEX.search(value), f"an id in {where}"
            assert not EMAIL.search(value), f"an email in {where}"
            assert len(value) <= 100, f"a long value in {where}"
            values[(sample.name, label)].add(value)
    crowded = {k: len(v) for k, v in values.items() if len(v) > MAX_VALUES_PER_LABEL}
    assert not crowded, f"{service}: labels with many values: {crowded}"
