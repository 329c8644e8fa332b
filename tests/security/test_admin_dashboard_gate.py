"""Who may open the admin KPI page and how its browser session is kept (issue 16), on the real app and
middleware without backends: the refusals are decided before any KPI source is asked.

The page's happy path, its numbers and a real browser are in tests/integration/test_admin_dashboard.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from goblin.v1 import auth_pb2
from services.common.settings import Environment
from services.gateway.api.routes.admin import COOKIE, DASHBOARD_PATH, SESSION_PATH, page_csp, script_json
from services.gateway.caches import PrincipalCache
from services.gateway.config import GatewaySettings
from services.gateway.main import create_app
from tests.security.envelope import assert_error_envelope

ADMIN = "admin-credential"
NARROW_ADMIN = "admin-chat-only-key"
USER = "user-credential"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TestClient:
    """The real app (production settings: the strictest gate), a principal cache with an admin, an
    admin's key scoped to chat, and a plain user; no backend exists, so nothing past the gate answers."""
    for name, value in {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "GOBLIN_HOME": str(tmp_path),
        "GOBLIN_RATE_LIMIT_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    settings.goblin_env = Environment.production
    app = create_app(settings)
    principals = PrincipalCache(60)
    principals.put(ADMIN, auth_pb2.Principal(user_id="u-admin", tenant_id="default", role="admin", scopes=["*"]))
    principals.put(
        NARROW_ADMIN,
        auth_pb2.Principal(user_id="u-admin", tenant_id="default", role="admin", scopes=["chat"], api_key_id="k1"),
    )
    principals.put(USER, auth_pb2.Principal(user_id="u-user", tenant_id="other", role="user", scopes=["*"]))
    app.state.gateway = SimpleNamespace(settings=settings, principals=principals)
    # base_url https: the session cookie is Secure, as a browser on the gateway's HTTPS would see it.
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def test_json_without_a_credential_is_401(client: TestClient) -> None:
    reply = client.get(DASHBOARD_PATH, headers=JSON)
    assert reply.status_code == 401
    assert_error_envelope(reply)
    assert reply.headers["www-authenticate"] == "Bearer"


def test_a_browser_without_a_credential_gets_the_sign_in_form_with_401(client: TestClient) -> None:
    reply = client.get(DASHBOARD_PATH, headers=HTML)
    assert reply.status_code == 401
    assert reply.headers["content-type"].startswith("text/html")
    assert 'action="/mcp/v1/admin/session"' in reply.text and 'name="credential"' in reply.text
    assert_page_is_sealed(reply)


@pytest.mark.parametrize("accept", [JSON, HTML])
@pytest.mark.parametrize("credential", [USER, NARROW_ADMIN], ids=["non-admin", "admin key without admin scope"])
def test_non_admins_and_narrow_admin_keys_get_403(client: TestClient, credential: str, accept: dict) -> None:
    reply = client.get(DASHBOARD_PATH, headers={**accept, **bearer(credential)})
    assert reply.status_code == 403, reply.text
    assert_error_envelope(reply)


@pytest.mark.parametrize("header", ["Basic YWRtaW46YWRtaW4=", "Bearer ", "Bearer", "token admin-credential"])
def test_malformed_authorization_is_401(client: TestClient, header: str) -> None:
    reply = client.get(DASHBOARD_PATH, headers={**JSON, "Authorization": header})
    assert reply.status_code == 401
    assert_error_envelope(reply)


def test_a_non_admin_cookie_is_403_and_a_huge_one_401(client: TestClient) -> None:
    assert client.get(DASHBOARD_PATH, headers={**JSON, "Cookie": f"{COOKIE}={USER}"}).status_code == 403
    assert client.get(DASHBOARD_PATH, headers={**JSON, "Cookie": f"{COOKIE}={'x' * 5000}"}).status_code == 401


def test_the_cookie_is_not_a_credential_anywhere_else(client: TestClient) -> None:
    reply = client.get("/metrics", headers={"Cookie": f"{COOKIE}={ADMIN}"})  # admin-only in production
    assert reply.status_code == 401
    assert_error_envelope(reply)


def test_sign_in_sets_a_cookie_scripts_and_other_sites_cannot_use(client: TestClient) -> None:
    reply = client.post(SESSION_PATH, data={"credential": ADMIN}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == DASHBOARD_PATH
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={ADMIN};")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/mcp/v1/admin", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), (attribute, cookie)
    assert reply.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("credential", "status"), [(USER, 403), (NARROW_ADMIN, 403), ("nobody-knows-this", 401), ("", 400)]
)
def test_sign_in_refuses_non_admins_without_a_cookie(
    client: TestClient, credential: str, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unknown(_credential: str) -> auth_pb2.Principal:
        from services.gateway.errors import ApiError

        raise ApiError(401, "unauthorized", "invalid credential")

    # An unknown credential goes to auth; here a stand-in that refuses it, as auth would.
    client.app.state.gateway.clients = SimpleNamespace(auth=SimpleNamespace(authenticate=unknown))
    browser = {"Accept": "text/html,application/xhtml+xml"}  # a form submitted by a browser
    reply = client.post(SESSION_PATH, data={"credential": credential}, headers=browser, follow_redirects=False)
    assert reply.status_code == status, reply.text
    assert "set-cookie" not in reply.headers
    assert reply.headers["content-type"].startswith("text/html")
    assert_page_is_sealed(reply)
    # Any other client gets the JSON error every route answers, and no cookie either.
    reply = client.post(SESSION_PATH, data={"credential": credential}, follow_redirects=False)
    assert reply.status_code == status and "set-cookie" not in reply.headers
    assert {"error", "message", "correlation_id"} <= set(reply.json())


def test_hostile_text_in_the_sign_in_message_is_escaped(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.gateway.api.routes import admin

    reply = admin.sign_in_page(403, '<script>alert(1)</script>"')
    body = reply.body.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in body


@pytest.mark.parametrize("path", [SESSION_PATH, f"{SESSION_PATH}/end"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://other.testserver"},
    ],
)
def test_cross_site_posts_are_refused(client: TestClient, path: str, headers: dict[str, str]) -> None:
    reply = client.post(path, data={"credential": ADMIN}, headers=headers, follow_redirects=False)
    assert reply.status_code == 403
    assert_error_envelope(reply)
    assert "set-cookie" not in reply.headers


def test_a_browser_form_of_the_page_itself_signs_in(client: TestClient) -> None:
    # What chromium sends for the sign-in form under the page's no-referrer policy.
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    reply = client.post(SESSION_PATH, data={"credential": ADMIN}, headers=headers, follow_redirects=False)
    assert reply.status_code == 303 and COOKIE in reply.headers["set-cookie"]


def test_sign_in_refuses_an_oversized_credential(client: TestClient) -> None:
    reply = client.post(SESSION_PATH, data={"credential": "k" * 5000}, follow_redirects=False)
    assert 400 <= reply.status_code < 500 and "set-cookie" not in reply.headers


def test_sign_out_clears_the_cookie(client: TestClient) -> None:
    reply = client.post(f"{SESSION_PATH}/end", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["set-cookie"].startswith(f'{COOKIE}="";') and "Max-Age=0" in reply.headers["set-cookie"]


def test_embedded_json_cannot_close_its_script_element() -> None:
    text = script_json({"name": "</script><script>alert(1)</script><!--"})
    assert "<" not in text and ">" not in text


def test_the_page_policy_allows_only_its_own_nonce() -> None:
    csp = page_csp("abc")
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "script-src 'nonce-abc'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp


@pytest.mark.parametrize("path", ["/health/all", "/health/db-pool"])
def test_health_detail_needs_an_admin_in_production(client: TestClient, path: str) -> None:
    for headers, status in (({}, 401), (bearer(USER), 403), (bearer(NARROW_ADMIN), 403)):
        reply = client.get(path, headers=headers)
        assert reply.status_code == status, (path, headers, reply.text)
        assert_error_envelope(reply)


def assert_page_is_sealed(reply: object) -> None:
    """A page that runs only its own nonce'd code, loads nothing from elsewhere and is never cached."""
    csp = reply.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce, csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert reply.headers["cache-control"] == "no-store"
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", reply.text), "the page loads something from outside"
    for tag in re.findall(r"<(?:script|style)\b[^>]*>", reply.text):
        assert f'nonce="{nonce.group(1)}"' in tag or 'type="application/json"' in tag, tag
