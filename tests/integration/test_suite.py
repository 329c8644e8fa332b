"""The whole suite as real processes, driven over HTTPS through the gateway."""

from __future__ import annotations

import json
import stat
import time
from collections import Counter

import httpx
import psutil

from goblin_tools.otlp import OtlpCollector
from goblin_tools.suite import SERVICES, Suite


def test_health_ready_reports_every_service_serving(suite: Suite) -> None:
    with suite.client() as client:
        live = client.get("/health")
        ready = client.get("/health/ready")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert ready.status_code == 200, ready.text
    expected = {name: "SERVING" for name in (*SERVICES, "postgres", "redis")}
    assert ready.json() == {"status": "ready", "services": expected}


def test_health_all_and_api_health_give_per_service_detail(suite: Suite) -> None:
    with suite.client() as client:
        for path in ("/health/all", "/api/health"):
            body = client.get(path).json()
            assert body["status"] == "ok"
            for name in SERVICES:
                detail = body["services"][name]
                assert detail["status"] == "SERVING"
                assert detail["address"] == suite.grpc_address(name)
                assert detail["latency_ms"] >= 0


def test_tls_only_with_a_certificate_from_the_dev_ca(suite: Suite) -> None:
    with httpx.Client(verify=True, timeout=5) as client:  # the system trust store does not know our CA
        try:
            client.get(f"{suite.gateway_url}/health")
            raise AssertionError("certificate accepted without the dev CA")
        except httpx.ConnectError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
    with httpx.Client(timeout=5) as client:
        try:
            client.get(suite.gateway_url.replace("https://", "http://") + "/health")
            raise AssertionError("plain HTTP answered")
        except httpx.HTTPError:
            pass


def test_admin_key_is_owner_only_and_accepted(suite: Suite) -> None:
    key_file = suite.home / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with suite.admin_client() as client:
        me = client.get("/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "admin"
    assert me.json()["email"] == "admin@goblin.local"


def test_admin_key_is_stored_hashed(suite: Suite) -> None:
    import asyncio

    import asyncpg

    async def stored() -> list[str]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            return [r["key_hash"] for r in await conn.fetch("SELECT key_hash FROM auth.api_keys")]
        finally:
            await conn.close()

    hashes = asyncio.run(stored())
    assert hashes and suite.admin_key not in hashes
    import hashlib

    assert hashlib.sha256(suite.admin_key.encode()).hexdigest() in hashes


def test_missing_or_bad_credentials_get_json_401(suite: Suite) -> None:
    with suite.client() as client:
        missing = client.get("/auth/me")
        bad = client.get("/auth/me", headers={"Authorization": "Bearer gk_deadbeef_not-a-real-key"})
        basic = client.get("/auth/me", headers={"Authorization": "Basic dXNlcjpwdw=="})
    for reply in (missing, bad, basic):
        assert reply.status_code == 401
        body = reply.json()
        assert body["error"] == "unauthorized"
        assert body["correlation_id"] == reply.headers["X-Correlation-ID"]
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_correlation_id_is_echoed_or_made(suite: Suite) -> None:
    with suite.client() as client:
        echoed = client.get("/health", headers={"X-Correlation-ID": "my-request-42"})
        made = client.get("/health")
        hostile = client.get("/health", headers={"X-Correlation-ID": "<script>alert(1)</script>"})
    assert echoed.headers["X-Correlation-ID"] == "my-request-42"
    assert len(made.headers["X-Correlation-ID"]) == 36
    assert "<script>" not in hostile.headers["X-Correlation-ID"]


def test_unknown_route_is_a_json_404(suite: Suite) -> None:
    with suite.client() as client:
        reply = client.get("/no/such/route")
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"


def test_every_service_serves_prometheus_metrics(suite: Suite) -> None:
    with suite.client() as client:
        client.get("/health/ready")
        gateway = client.get("/metrics").text
    assert 'http_requests_total{endpoint="/health/ready",method="GET",status_code="200"}' in gateway
    assert "http_request_duration_seconds_bucket" in gateway
    assert "http_requests_in_progress" in gateway
    assert 'service_health_status{service_name="router"} 1.0' in gateway
    for name in SERVICES:
        text = httpx.get(suite.metrics_url(name), timeout=5).text
        assert "process_resident_memory_bytes" in text, name
        assert "goblin_grpc_server_handled_total" in text or "# HELP goblin_grpc_server_handled_total" in text


def test_metrics_use_route_templates_not_raw_paths(suite: Suite) -> None:
    with suite.client() as client:
        for i in range(3):
            client.get(f"/no/such/{i}")
        text = client.get("/metrics").text
    assert "/no/such/" not in text
    assert 'endpoint="unmatched"' in text


def test_access_log_is_json_with_correlation_id_and_hashed_user(suite: Suite) -> None:
    with suite.client() as client:
        client.get("/health", headers={"X-Correlation-ID": "log-check-7"})
    with suite.admin_client() as client:
        me = client.get("/auth/me", headers={"X-Correlation-ID": "log-check-8"}).json()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in suite.log_lines() if "log-check-7" in line]
        if lines:
            break
        time.sleep(0.1)
    entry = lines[0]
    assert entry["message"] == "request_completed"
    assert entry["method"] == "GET" and entry["path"] == "/health" and entry["status_code"] == 200
    assert entry["correlation_id"] == "log-check-7"
    assert "duration_ms" in entry and "trace_id" in entry and "span_id" in entry
    assert entry["user_hash"] == ""
    deadline = time.monotonic() + 5
    authenticated: list[dict] = []
    while time.monotonic() < deadline and not authenticated:
        authenticated = [json.loads(line) for line in suite.log_lines() if "log-check-8" in line]
        time.sleep(0.1)
    access = next(e for e in authenticated if e["message"] == "request_completed")
    assert access["user_hash"] and access["user_hash"] != me["user_id"]
    assert me["user_id"] not in suite.log_path.read_text(), "a raw user id reached the logs"


def test_one_trace_spans_gateway_and_services(suite: Suite, otlp_collector: OtlpCollector) -> None:
    with suite.admin_client() as client:
        # A key nobody has used yet: the gateway caches verified credentials, and a cached one would
        # not reach the auth service at all.
        created = client.post("/auth/api-keys", json={"name": "trace-check", "scopes": ["keys"]})
        assert created.status_code == 201, created.text
        fresh = {"Authorization": f"Bearer {created.json()['key']}", "X-Correlation-ID": "trace-check-1"}
        reply = client.get("/auth/me", headers=fresh)
    assert reply.status_code == 200
    deadline = time.monotonic() + 15
    trace_ids: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        spans = otlp_collector.spans()
        gateway = [s for s in spans if s.service == "goblin-gateway" and s.name.startswith("GET /auth/me")]
        trace_ids = {
            s.service: {s.trace_id}
            for s in spans
            if gateway and s.trace_id == gateway[0].trace_id and s.service != "goblin-gateway"
        }
        if "goblin-auth" in trace_ids:
            break
        time.sleep(0.2)
    assert gateway, "the gateway exported no span for /auth/me"
    per_trace = Counter(s.trace_id for s in gateway)
    assert set(per_trace.values()) == {1}, f"one gateway server span per request, not {per_trace}"
    assert "goblin-auth" in trace_ids, "the auth span is not in the gateway's trace"
    auth_spans = [s for s in otlp_collector.spans() if s.service == "goblin-auth" and s.trace_id == gateway[0].trace_id]
    assert any(s.name == "/goblin.v1.Auth/Authenticate" for s in auth_spans)


def test_killed_service_is_reported_within_2s_and_restarted(suite: Suite) -> None:
    victim = suite.service_process("executor")
    old_pid = victim.pid
    victim.kill()
    killed_at = time.monotonic()
    reported_after = None
    with suite.client(timeout=5) as client:
        while time.monotonic() - killed_at < 2.0:
            reply = client.get("/health/ready")
            if reply.status_code == 503:
                body = reply.json()
                assert body["error"] == "not_ready"
                assert body["services"]["executor"] != "SERVING"
                reported_after = time.monotonic() - killed_at
                break
            time.sleep(0.05)
        assert reported_after is not None, "a dead executor was not reported within 2 s"
        suite.wait_ready(timeout_s=60)
    new = suite.service_process("executor")
    assert new.pid != old_pid
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE


def permissive_tls_server(suite: Suite) -> int:
    """A one-shot local TLS server that accepts TLS 1.1, to prove the client below can speak it."""
    import socket
    import ssl
    import threading

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(suite.home / "tls" / "server.pem", suite.home / "tls" / "server-key.pem")
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_tls_1_2_or_newer_only(suite: Suite) -> None:
    import socket
    import ssl

    port = int(suite.gateway_url.rsplit(":", 1)[1])
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(suite.ca_file))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer TLS 1.1 at all; the server must still refuse
    with socket.create_connection(("127.0.0.1", permissive_tls_server(suite)), timeout=5) as raw:
        with old.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.1", "this client cannot speak TLS 1.1, so it proves nothing"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                raise AssertionError("the gateway accepted TLS 1.1")
        except ssl.SSLError:
            pass
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = suite.ssl_context()
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == version.name.replace("TLSv1_", "TLSv1.")


SPEC_GATEWAY_METRICS = (
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
)


def test_every_gateway_metric_of_the_spec_exists(suite: Suite) -> None:
    """Dashboards and alert rules use these names (SPEC.md): each must be exported after real traffic."""
    with suite.admin_client() as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        client.post(
            "/v1/chat/completions", json={"model": "local/none", "messages": [{"role": "user", "content": "hi"}]}
        )
        client.post(
            "/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "ssn 123-45-6789"}], "max_tokens": 2},
        )
        client.get("/health/ready")
        text = client.get("/metrics").text
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    missing = [name for name in SPEC_GATEWAY_METRICS if name not in declared]
    assert not missing, missing
    for sample in (
        'chat_completions_total{model="local/smollm2-135m-instruct",provider="local"}',
        'chat_completion_tokens_total{model="local/smollm2-135m-instruct",provider="local",token_type="completion"}',
        'chat_completion_errors_total{error_type="model_not_found",provider="local"}',
        'goblin_security_secrets_detected_total{location="request_creation"}',
    ):
        assert sample in text, sample
