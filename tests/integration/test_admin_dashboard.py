"""The admin KPI page against the running suite, in a real headless browser (issue 16).

A known workload (chats, quota refusals, a chat carrying a secret) moves the JSON document by exactly
what it did; Debian's chromium, driven through chromium-driver by Selenium, signs in with the admin key,
renders the page with no console error and nothing requested off the gateway, shows the same numbers
as the JSON, shows a hostile tenant name as text; a non-admin is refused. A screenshot is kept under
the pytest basetemp (its path is printed).

KPIs are global: admins are the platform's operators (they list every tenant and read every tenant's
books), so the document covers every tenant; a non-admin of any tenant gets 403.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest

from goblin.v1 import auth_pb2, auth_pb2_grpc
from goblin_tools.suite import GOBLIN, Suite
from tests.integration.auth_support import admin_token, auth_stub, auth_suite_fixture, bearer
from tests.integration.principals import as_caller
from tests.unit.common.test_secrets import SAMPLES

pytestmark = pytest.mark.integration
# The auth tests' suite: it has an admin password, and making a user takes a signed-in admin session.
auth_suite = auth_suite_fixture()

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PATH = "/mcp/v1/admin/dashboard"
JSON = {"Accept": "application/json"}
PASSWORD = "kpi-dashboard-Passw0rd!"
CHATS = 3  # the quota tenant's requests per day: each of these is answered
REFUSED = 2  # ... and each after them is a 429
HOSTILE_NAME = '<img src=x onerror="document.title=\'pwned\'">Ops & "QA"'
# A rate: it moves between two readings of the same counters, so it is not compared.
MOVING_KPIS = {"tokens_per_s"}


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed here as `make install` does (best effort, as
    root with apt) when missing; a clear failure when they cannot be."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=900,
        )
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the admin page's browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver, as root); they are not installed and apt could not install them"
        )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless chromium with a fresh profile, console and network logs on. The suite's dev CA is not in
    chromium's trust store, so its certificate errors are ignored: TLS itself is tested elsewhere."""
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.accept_insecure_certs = True
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def document(client: httpx.Client) -> dict[str, Any]:
    reply = client.get(PATH, headers=JSON)
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    return reply.json()


def kpis(doc: dict[str, Any]) -> dict[str, Any]:
    return {k["id"]: k for k in doc["kpis"]}


@pytest.fixture(scope="module")
def workload(auth_suite: Suite) -> dict[str, Any]:
    """A tenant with a 3-requests/day quota and a hostile name; its user makes 3 chats and 2 refused
    ones; the admin sends one chat carrying an AWS key. The documents before and after, and the user."""
    tenant = f"kpi-{uuid.uuid4().hex[:8]}"
    email = f"kpi-{uuid.uuid4().hex[:8]}@example.com"
    with auth_suite.admin_client() as admin:
        made = admin.post("/auth/tenants", json={"id": tenant, "name": HOSTILE_NAME, "requests_per_day": CHATS})
        assert made.status_code == 201, made.text
        body = {"email": email, "password": PASSWORD, "tenant_id": tenant}
        user = admin.post("/auth/register", json=body, headers=bearer(admin_token(admin)))
        assert user.status_code == 201, user.text
        before = document(admin)
        token = admin.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        chat = {"model": "local", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
        statuses = [
            admin.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(CHATS + REFUSED)
        ]
        assert statuses == [200] * CHATS + [429] * REFUSED, statuses
        secret = {**chat, "messages": [{"role": "user", "content": f"debug {SAMPLES['aws_access_key']} please"}]}
        assert admin.post("/v1/chat/completions", json=secret).status_code == 200
        # The router's ledger and the gateway's audit rows are written in batches: wait until the ledger
        # has booked every answered chat and the secret's audit row is in.
        booked = before["budget"]["today"]["requests"] + CHATS + 1
        deadline = time.monotonic() + 30
        while not settled(after := document(admin), booked):
            assert time.monotonic() < deadline, (after["budget"], after["events"])
            time.sleep(0.5)
    return {"before": before, "after": after, "token": token, "tenant": tenant}


def settled(doc: dict[str, Any], booked: int) -> bool:
    events = {e["event_type"] for e in doc["events"]}
    return doc["budget"]["today"]["requests"] >= booked and "secret_detected" in events


def test_the_json_moves_by_exactly_the_workload(workload: dict[str, Any]) -> None:
    before, after = workload["before"], workload["after"]
    moved = {k: after["traffic"][k] - before["traffic"][k] for k in ("rate_limited", "chat_completions")}
    assert moved == {"rate_limited": REFUSED, "chat_completions": CHATS + 1}, moved
    caught = after["security"]["secrets_detected"].get("request_creation", 0)
    assert caught - before["security"]["secrets_detected"].get("request_creation", 0) == 1
    assert after["security"]["violations"] - before["security"]["violations"] == 1
    now = kpis(after)
    assert now["rate_429"]["value"] == pytest.approx(after["traffic"]["rate_limited"] / after["traffic"]["requests"])
    assert now["security_violations"]["status"] in ("warning", "critical")
    assert now["p95_latency_s"]["value"] is not None and now["p95_latency_s"]["warning"] == 1.0
    assert after["errors"] == [], after["errors"]
    assert {s["name"] for s in after["services"]} >= {"gateway", "router", "inference", "rag", "auth", "executor"}
    assert all(s["status"] == "SERVING" for s in after["services"]), after["services"]
    assert after["inference"]["model_loaded"] and after["inference"]["queue_capacity"] > 0
    assert "local" in {p["name"] for p in after["providers"]}
    tenant = next(t for t in after["budget"]["tenants"] if t["id"] == workload["tenant"])
    assert tenant["name"] == HOSTILE_NAME and tenant["requests"] == CHATS
    # The audit trail, newest first: the quota running out in the new tenant, the secret at the gateway.
    events = after["events"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert any(e["event_type"] == "quota_exhausted" and e["tenant_id"] == workload["tenant"] for e in events), events
    assert any(e["event_type"] == "secret_detected" and e["location"] == "request_creation" for e in events), events
    assert all(set(e) == {"id", "event_type", "location", "tenant_id", "correlation_id", "created_at"} for e in events)
    assert after["db_pool"]["status"] == "ok" and after["db_pool"]["max_size"] >= after["db_pool"]["size"] >= 1


def test_the_page_in_a_browser_shows_the_json(
    auth_suite: Suite, workload: dict[str, Any], browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(auth_suite.gateway_url + PATH)
    assert browser.find_element(By.ID, "sign-in")  # no credential yet: the sign-in form
    browser.find_element(By.ID, "credential").send_keys(auth_suite.admin_key)
    browser.get_log("browser")  # the sign-in page's own 401 is the expected answer, not a page error
    browser.get_log("performance")
    browser.find_element(By.ID, "submit").click()
    wait_for(browser, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "the page to render")
    # One refresh through the page's own fetch, with the cookie, before reading it.
    first = browser.execute_script("return document.body.dataset.generated")
    wait_for(browser, lambda d: d.execute_script("return document.body.dataset.generated") != first, "a refresh")

    shown = {
        card.get_attribute("data-kpi"): (
            json.loads(card.find_element(By.CSS_SELECTOR, ".value").get_attribute("data-value")),
            card.get_attribute("data-status"),
        )
        for card in browser.find_elements(By.CSS_SELECTOR, ".card[data-kpi]")
    }
    with auth_suite.admin_client() as admin:
        truth = kpis(document(admin))
    assert set(shown) == set(truth)
    for kpi_id, (value, status) in shown.items():
        if kpi_id in MOVING_KPIS:
            continue
        assert value == truth[kpi_id]["value"], (kpi_id, value, truth[kpi_id])
        assert status == truth[kpi_id]["status"], (kpi_id, status, truth[kpi_id])

    assert "quota_exhausted" in browser.find_element(By.ID, "events").text
    budgets = browser.find_element(By.ID, "budgets").text
    assert HOSTILE_NAME.split(">")[0] in budgets, budgets  # the name as text, markup and all
    assert browser.title == "Goblin: KPIs"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    assert not browser.find_elements(By.CSS_SELECTOR, "#budgets img")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    origin = urlsplit(auth_suite.gateway_url)
    requested = requested_urls(browser)
    assert requested, "no request seen in the performance log"
    off_host = [u for u in requested if not u.startswith("data:") and urlsplit(u).netloc != origin.netloc]
    assert off_host == [], off_host

    screenshot = Path(tmp_path_factory.getbasetemp()) / "admin_dashboard.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"admin dashboard screenshot: {screenshot}")

    browser.find_element(By.ID, "sign-out").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "sign-in"))


def test_a_non_admin_gets_403_in_the_browser_and_over_json(
    auth_suite: Suite, workload: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(auth_suite.gateway_url + PATH)
    browser.find_element(By.ID, "credential").send_keys(workload["token"])
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: "admin only" in d.find_element(By.ID, "message").text)
    assert not browser.find_elements(By.CSS_SELECTOR, ".card[data-kpi]")
    assert browser.get_cookies() == []
    with auth_suite.client() as client:
        reply = client.get(PATH, headers={**JSON, "Authorization": f"Bearer {workload['token']}"})
        assert reply.status_code == 403 and reply.json()["error"] == "forbidden"
        assert client.get(PATH, headers=JSON).status_code == 401


def test_an_admin_key_without_the_admin_scope_gets_403(auth_suite: Suite) -> None:
    with auth_suite.admin_client() as admin:
        made = admin.post("/auth/api-keys", json={"name": "kpi-chat-only", "scopes": ["chat"]})
        assert made.status_code == 201, made.text
        narrow = made.json()["key"]
    with auth_suite.client() as client:
        reply = client.get(PATH, headers={**JSON, "Authorization": f"Bearer {narrow}"})
        assert reply.status_code == 403, reply.text


def test_health_all_shows_each_dependency_and_the_pool(auth_suite: Suite) -> None:
    with auth_suite.admin_client() as admin:
        body = admin.get("/health/all").json()
        pool = admin.get("/health/db-pool").json()
    for name in ("router", "inference", "rag", "auth", "executor", "postgres", "redis"):
        assert body["services"][name]["status"] == "SERVING" and body["services"][name]["latency_ms"] >= 0
    for stats in (body["db_pool"], pool):
        assert stats["status"] == "ok"
        assert stats["in_use"] + stats["idle"] == stats["size"] <= stats["max_size"]
        assert stats["waiting"] >= 0


def wait_for(browser: Any, condition: Any, what: str, timeout_s: float = 30) -> None:
    """``condition(browser)`` within ``timeout_s``, else a failure showing what the browser had."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, timeout_s).until(condition)
    except TimeoutException:
        body = browser.execute_script("return document.body ? document.body.innerText : ''")
        pytest.fail(f"waiting for {what}: url {browser.current_url}\nlog {browser.get_log('browser')}\n{body[:2000]}")


def requested_urls(browser: Any) -> list[str]:
    """Every URL the page asked for, from chromium's performance (DevTools network) log."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_goblin_top_once_prints_the_kpis(auth_suite: Suite, workload: dict[str, Any]) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "GOBLIN_HOME": str(auth_suite.home),
        "GOBLIN_GATEWAY_PORT": auth_suite.env["GOBLIN_GATEWAY_PORT"],
        "COLUMNS": "220",
    }
    done = subprocess.run(
        [str(GOBLIN), "top", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with auth_suite.admin_client() as admin:
        truth = document(admin)
    for k in truth["kpis"]:
        assert k["label"] in done.stdout, (k["label"], done.stdout)
    traffic_row = next(line for line in done.stdout.splitlines() if "loaded" in line)
    assert str(truth["traffic"]["rate_limited"]) in traffic_row.split(), traffic_row
    assert "SERVING" in done.stdout and HOSTILE_NAME[:20] in done.stdout


def test_goblin_top_names_a_refusal(auth_suite: Suite, workload: dict[str, Any]) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "GOBLIN_HOME": str(auth_suite.home),
        "GOBLIN_GATEWAY_PORT": auth_suite.env["GOBLIN_GATEWAY_PORT"],
        "GOBLIN_API_KEY": workload["token"],  # a user's credential, not an admin's
        "COLUMNS": "220",
    }
    done = subprocess.run(
        [str(GOBLIN), "top", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "HTTP 403" in done.stderr + done.stdout, (done.stdout, done.stderr)


def test_the_audit_trail_rpc_is_for_admins_only(auth_suite: Suite, workload: dict[str, Any]) -> None:
    """Past the gateway, straight to auth: a user's principal (even with every scope and a claimed admin
    role, which auth rereads from its database), and no principal at all, are refused."""
    with suite_auth(auth_suite) as stub:
        me = stub.Authenticate(auth_pb2.AuthenticateRequest(credential=workload["token"]))
        request = auth_pb2.ListAuditEventsRequest(limit=5)
        for claims in ({"scopes": ("*",)}, {"scopes": ("*",), "role": "admin"}):
            metadata = as_caller(auth_suite, me.user_id, workload["tenant"], **claims)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListAuditEvents(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, claims
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ListAuditEvents(request, timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as too_many:
            admin_id = stub.Authenticate(auth_pb2.AuthenticateRequest(credential=auth_suite.admin_key)).user_id
            stub.ListAuditEvents(
                auth_pb2.ListAuditEventsRequest(limit=10_000),
                metadata=as_caller(auth_suite, admin_id, "default", scopes=("*",), role="admin"),
                timeout=10,
            )
        assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@contextmanager
def suite_auth(suite: Suite) -> Iterator[auth_pb2_grpc.AuthStub]:
    channel, stub = auth_stub(suite)
    try:
        yield stub
    finally:
        channel.close()


def test_an_admin_of_another_tenant_sees_the_same_global_document(auth_suite: Suite, workload: dict[str, Any]) -> None:
    """Admins are the platform's operators, whatever tenant their account is in: the document is global."""
    email = f"kpi-admin-{uuid.uuid4().hex[:8]}@example.com"
    with auth_suite.admin_client() as admin:
        body = {"email": email, "password": PASSWORD, "tenant_id": workload["tenant"], "role": "admin"}
        assert admin.post("/auth/register", json=body, headers=bearer(admin_token(admin))).status_code == 201
        theirs = admin.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        ours = document(admin)
    with auth_suite.client(headers=bearer(theirs)) as other:
        seen = document(other)
    assert (
        {t["id"] for t in seen["budget"]["tenants"]}
        == {t["id"] for t in ours["budget"]["tenants"]}
        >= {
            "default",
            workload["tenant"],
        }
    )
    assert seen["scope"] == "global" and seen["budget"]["today"]["requests"] == ours["budget"]["today"]["requests"]
