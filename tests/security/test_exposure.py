"""What anonymous callers may read (issue 12, item 7, the gateway's part).

In production (``GOBLIN_ENV=production``), per-service health detail, the API schema and its pages, and
the public ``/metrics`` need an admin credential (Prometheus scrapes the separate metrics listener,
``GOBLIN_GATEWAY_METRICS_PORT``); in development they stay open, as before. Liveness and readiness stay
open everywhere (probes carry no credential). The JWKS document has a rate class of its own, so
verifiers fetching it neither use up nor are refused by the login limit.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from goblin.v1 import auth_pb2
from services.common.settings import Environment
from services.gateway.caches import PrincipalCache
from services.gateway.config import GatewaySettings
from services.gateway.main import create_app
from services.gateway.ratelimit import RouteClass, classify
from tests.security.envelope import assert_error_envelope

OPERATOR_PATHS = ["/health/all", "/api/health", "/docs", "/redoc", "/openapi.json", "/metrics"]
ADMIN_KEY = "admin-credential"
USER_KEY = "user-credential"


def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, production: bool) -> TestClient:
    """The real app and middleware, without its lifespan: a stand-in state holds the settings and a
    principal cache with one admin and one plain user, so no route here reaches a backend."""
    for name, value in {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "GOBLIN_HOME": str(tmp_path),
        "GOBLIN_RATE_LIMIT_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    if production:
        # Production also demands real certificates and stores; what is tested here is the gate alone.
        settings.goblin_env = Environment.production
    app = create_app(settings)
    principals = PrincipalCache(60)
    principals.put(ADMIN_KEY, auth_pb2.Principal(user_id="u-admin", role="admin", scopes=["*"]))
    principals.put(USER_KEY, auth_pb2.Principal(user_id="u-user", role="user", scopes=["*"]))
    app.state.gateway = SimpleNamespace(settings=settings, principals=principals)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_production_refuses_anonymous_operator_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str
) -> None:
    client = gateway(monkeypatch, tmp_path, production=True)
    anonymous = client.get(path)
    assert anonymous.status_code == 401, (path, anonymous.status_code, anonymous.text[:200])
    assert_error_envelope(anonymous)
    user = client.get(path, headers={"Authorization": f"Bearer {USER_KEY}"})
    assert user.status_code == 403, (path, user.status_code)
    assert_error_envelope(user)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics"])
def test_production_serves_admins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str) -> None:
    client = gateway(monkeypatch, tmp_path, production=True)
    reply = client.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert reply.status_code == 200, (path, reply.text[:200])


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics"])
def test_development_is_open_as_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str) -> None:
    client = gateway(monkeypatch, tmp_path, production=False)
    reply = client.get(path)
    assert reply.status_code == 200, (path, reply.text[:200])
    if path == "/openapi.json":
        assert "/v1/chat/completions" in reply.json()["paths"]


def test_liveness_stays_open_in_production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = gateway(monkeypatch, tmp_path, production=True)
    assert client.get("/health").status_code == 200


def test_jwks_is_not_in_the_login_rate_class() -> None:
    assert classify("/.well-known/jwks.json") is not RouteClass.auth
    assert classify("/auth/login") is RouteClass.auth


def test_jwks_limit_is_its_own_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("GOBLIN_RATE_LIMIT_AUTH", "2/minute")
    limits = GatewaySettings().rate_limits()
    jwks_class = classify("/.well-known/jwks.json")
    assert [str(i) for i in limits[RouteClass.auth]] == ["2 per 1 minute"]
    assert limits[jwks_class][0].amount >= 100  # generous by default: verifiers poll it
