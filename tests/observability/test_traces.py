"""One trace per request, across every service it touches, exported over OTLP to a TraceService this
test serves (goblin_tools.otlp, the opentelemetry-proto messages over gRPC).

A RAG chat completion answered by a remote provider goes gateway -> auth (a credential the gateway has
not cached) -> router -> rag -> inference (the question's embedding) -> router -> the provider over
HTTP; every span of it must be in one trace under the gateway's server span, with Postgres and Redis
spans among them. A task goes gateway -> executor, then later worker -> launcher: the run's spans hang
under the request that queued it. No span attribute may carry the prompt, a document's text, a key or a
user's id or email.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.otlp import OtlpCollector, ReceivedSpan
from goblin_tools.suite import Suite
from tests.integration.docqa_support import HANDBOOK, new_key
from tests.observability.conftest import COLLECTION, REMOTE_MODEL

pytestmark = pytest.mark.integration  # the whole suite runs: with `make test-integration`

SERVICES_ON_THE_RAG_PATH = {"goblin-gateway", "goblin-auth", "goblin-router", "goblin-rag", "goblin-inference"}


def wait_for_trace(
    collector: OtlpCollector, root_name: str, trace_id: str, done: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    """The spans of ``trace_id`` once ``done`` says all arrived (spans are exported in batches)."""
    deadline = time.monotonic() + 20
    while True:
        spans = [s for s in collector.spans() if s.trace_id == trace_id]
        if (spans and done(spans)) or time.monotonic() > deadline:
            assert any(s.name == root_name for s in spans), f"no {root_name} span in trace {trace_id}"
            return spans
        time.sleep(0.2)


def assert_one_tree(spans: list[ReceivedSpan], root_name: str) -> None:
    """One root, the gateway's server span, and every other span's parent in the same trace."""
    roots = [s for s in spans if not s.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("goblin-gateway", root_name)], roots
    ids = {s.span_id for s in spans}
    orphans = [(s.service, s.name) for s in spans if s.parent_span_id and s.parent_span_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"


def services_of(spans: list[ReceivedSpan]) -> set[str]:
    return {s.service for s in spans}


def test_a_rag_chat_request_is_one_trace_through_every_service(
    obs_suite: Suite, obs_admin: httpx.Client, obs_collector: OtlpCollector, obs_fake: FakeProviders
) -> None:
    # A key nobody has used: the gateway caches verified credentials, and a cached one skips auth.
    key = new_key(obs_admin, ["chat", "rag"])
    marker = f"zebra-{uuid.uuid4().hex[:10]}"
    prompt = f"How often do the Postgres database backups run? ({marker})"
    with obs_suite.client(headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={
                "model": REMOTE_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 24,
                "goblin": {"rag": {"collection": COLLECTION, "top_k": 3}},
            },
        )
    assert reply.status_code == 200, reply.text
    trace_id = reply.headers["X-Trace-Id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    root = "POST /v1/chat/completions"

    def complete(spans: list[ReceivedSpan]) -> bool:
        return SERVICES_ON_THE_RAG_PATH <= services_of(spans) and any(s.name == root for s in spans)

    spans = wait_for_trace(obs_collector, root, trace_id, complete)
    assert SERVICES_ON_THE_RAG_PATH <= services_of(spans), services_of(spans)
    assert_one_tree(spans, root)
    names = {(s.service, s.name) for s in spans}
    for hop in (
        ("goblin-auth", "/goblin.v1.Auth/Authenticate"),
        ("goblin-router", "/goblin.v1.Router/Chat"),
        ("goblin-rag", "/goblin.v1.Rag/Query"),
        ("goblin-inference", "/goblin.v1.Inference/Embed"),
    ):
        assert hop in names, f"{hop} missing from {sorted(names)}"
    postgres = [s for s in spans if s.attributes.get("db.system.name") == "postgresql"]
    assert postgres and all(s.attributes["db.query.text"] for s in postgres)
    assert any(s.attributes.get("db.system") == "redis" for s in spans), "no Redis span"
    # The provider: our span with provider, model and tokens, and under it the HTTP request.
    calls = [s for s in spans if s.name == "provider call" and s.attributes.get("gen_ai.provider.name") == "acme"]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.attributes["gen_ai.request.model"] == REMOTE_MODEL
    assert (
        int(call.attributes["gen_ai.usage.input_tokens"]) > 0 and int(call.attributes["gen_ai.usage.output_tokens"]) > 0
    )
    http = [s for s in spans if s.parent_span_id == call.span_id and s.name == "POST"]
    assert len(http) == 1 and http[0].attributes["http.response.status_code"] == "200", http
    assert http[0].attributes["url.path"] == "/acme/v1/chat/completions"
    router = next(s for s in spans if s.name == "/goblin.v1.Router/Chat" and s.service == "goblin-router")
    assert router.attributes["goblin.outcome"] == "ok" and router.attributes["gen_ai.provider.name"] == "acme"
    # The gateway's own log line for the request carries the same trace id.
    assert any(trace_id in line and "request_completed" in line for line in obs_suite.log_lines())

    me = obs_admin.get("/auth/me").json()
    secrets = {
        marker: "the prompt",
        key: "the caller's API key",
        obs_suite.admin_key: "the admin's API key",
        obs_fake.key("acme"): "the provider's key",
        me["user_id"]: "a user id",
        me["email"]: "an email",
        HANDBOOK["plants"][1][:40]: "a document's text",
    }
    for span in obs_collector.spans():
        for name, value in span.attributes.items():
            for secret, what in secrets.items():
                assert secret not in value, f"{what} in {span.service} {span.name} {name}={value}"


def test_a_tasks_run_is_traced_under_the_request_that_queued_it(
    obs_admin: httpx.Client, obs_collector: OtlpCollector
) -> None:
    reply = obs_admin.post("/v1/tasks", json={"goblin": "hello", "args": {"name": "tracer"}})
    assert reply.status_code == 202, reply.text
    trace_id = reply.headers["X-Trace-Id"]
    task_id = reply.json()["id"]
    root = "POST /v1/tasks"

    def complete(spans: list[ReceivedSpan]) -> bool:
        # The run's span ends (and is exported) after its launcher's.
        return {"executor launcher", "executor task run", root} <= {s.name for s in spans}

    spans = wait_for_trace(obs_collector, root, trace_id, complete)
    assert_one_tree(spans, root)
    by_id = {s.span_id: s for s in spans}
    create = next(s for s in spans if s.name == "/goblin.v1.Executor/RunTask" and s.service == "goblin-executor")
    assert create.service == "goblin-executor"
    run = next(s for s in spans if s.name == "executor task run")
    assert run.attributes["goblin.task.id"] == task_id and run.attributes["goblin.task.goblin"] == "hello"
    # The run hangs under the executor's handling of the request (its traceparent was in the queue row).
    assert run.parent_span_id == create.span_id
    launcher = next(s for s in spans if s.name == "executor launcher")
    assert by_id[launcher.parent_span_id] is run
    assert launcher.attributes["goblin.task.status"] == "succeeded" and launcher.attributes["process.exit.code"] == "0"
    # The run's own statements (its output, its end) are Postgres spans under it.
    under_run = {s.span_id for s in spans if s.parent_span_id == run.span_id}
    assert any(s.attributes.get("db.system.name") == "postgresql" for s in spans if s.span_id in under_run)


def test_every_gateway_response_has_a_trace_id_even_untraced_ones(obs_suite: Suite) -> None:
    theirs = "4bf92f3577b34da6a3ce929d0e0e4736"
    with obs_suite.client() as client:
        probe = client.get("/health")  # left out of tracing: probed every few seconds
        refused = client.get("/v1/models")  # no credential: 401
        joined = client.get("/health", headers={"traceparent": f"00-{theirs}-00f067aa0ba902b7-01"})
    for reply in (probe, refused):
        assert len(reply.headers["X-Trace-Id"]) == 32, reply.headers
    assert refused.status_code == 401
    assert joined.headers["X-Trace-Id"] == theirs
