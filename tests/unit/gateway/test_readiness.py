"""/health/ready's rule: 503 only for a dependency GOBLIN_READY_REQUIRES names (default: all)."""

from __future__ import annotations

import pytest

from services.common.settings import ConfigError, load_settings
from services.gateway.api.routes.health import readiness
from services.gateway.clients import ServiceHealth
from services.gateway.config import READY_DEPENDENCIES, GatewaySettings


@pytest.fixture(autouse=True)
def _stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://goblin@127.0.0.1:5432/goblin")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")


def health(name: str, serving: bool) -> ServiceHealth:
    return ServiceHealth(name, "127.0.0.1:1", "SERVING" if serving else "UNREACHABLE", 1.0)


def test_default_requires_every_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOBLIN_READY_REQUIRES", raising=False)
    requires = load_settings(GatewaySettings).readiness_requires()
    assert requires == frozenset(READY_DEPENDENCIES)
    assert readiness([health("inference", False), health("router", True)], requires) == (["inference"], [])


def test_a_dependency_not_required_only_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_READY_REQUIRES", " router, auth ,postgres,redis")
    requires = load_settings(GatewaySettings).readiness_requires()
    assert requires == {"router", "auth", "postgres", "redis"}
    results = [health("inference", False), health("rag", False), health("router", True), health("redis", True)]
    assert readiness(results, requires) == ([], ["inference", "rag"])
    assert readiness([*results, health("router", False)], requires) == (["router"], ["inference", "rag"])


def test_an_unknown_dependency_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_READY_REQUIRES", "router,infrence")
    with pytest.raises(ConfigError, match="infrence"):
        load_settings(GatewaySettings)
