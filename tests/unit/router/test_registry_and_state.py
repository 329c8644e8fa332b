"""Provider adapters built from the catalog and settings; provider health kept and persisted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.settings import env_name
from services.common.topology import REMOTE_PROVIDERS
from services.router.catalog import build_catalog, check_layer, load_file_layers, merge_layers
from services.router.config import RouterSettings, env_prefix
from services.router.provider_state import DeploymentSnapshot, ProviderSnapshot, ProviderStates
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider
from services.router.registry import ProviderRegistry
from tests.unit.router.conftest import metric


def registry(keys: dict[str, str], urls: dict[str, str] | None = None) -> ProviderRegistry:
    urls = urls or {}
    return ProviderRegistry(
        key_for=lambda spec: keys.get(spec.api_key_env),
        base_url_for=lambda spec: urls.get(spec.name, spec.base_url),
        options=HttpOptions(),
    )


def test_each_kind_gets_its_adapter_and_only_keyed_providers_are_configured() -> None:
    catalog = build_catalog(load_file_layers(None))
    providers = registry({"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"}, {"openai": "http://127.0.0.1:1/v1"})
    providers.sync(catalog)
    assert isinstance(providers.get("openai"), OpenAICompatibleProvider)
    assert isinstance(providers.get("deepseek"), OpenAICompatibleProvider)
    assert isinstance(providers.get("anthropic"), AnthropicProvider)
    assert isinstance(providers.get("gemini"), GeminiProvider)
    assert providers.get("openai").configured and providers.get("anthropic").configured
    assert not providers.get("gemini").configured
    assert providers.base_url("openai") == "http://127.0.0.1:1/v1"
    assert providers.get("openai").max_tokens_field == "max_completion_tokens"
    assert providers.get("grok").max_tokens_field == "max_tokens"


async def test_a_refresh_rebuilds_only_what_changed() -> None:
    layer = check_layer(
        {
            "providers": {
                "a": {"kind": "openai_compatible", "base_url": "https://a/v1"},
                "b": {"kind": "gemini", "base_url": "https://b"},
            }
        },
        "test",
    )
    keys = {"A_API_KEY": "1", "B_API_KEY": "2"}
    providers = registry(keys)
    providers.sync(build_catalog(merge_layers(layer)))
    a, b = providers.get("a"), providers.get("b")
    keys["B_API_KEY"] = "rotated"
    providers.sync(build_catalog(merge_layers(layer)))
    assert providers.get("a") is a, "unchanged: the same adapter and connection pool"
    assert providers.get("b") is not b and providers.get("b").api_key == "rotated"
    providers.sync(build_catalog(merge_layers(check_layer({"providers": {}}, "test"))))
    assert providers.get("a") is None
    await providers.aclose()


def test_provider_keys_come_from_the_usual_variables_or_files(monkeypatch: Any, tmp_path: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    secret = tmp_path / "anthropic"
    secret.write_text("ak-from-file\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(secret))
    monkeypatch.setenv("DEEPSEEK_BASE_URL", "http://127.0.0.1:9/deepseek")
    monkeypatch.setenv("MY_LLM_API_KEY", "custom")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    settings = RouterSettings()
    assert settings.provider_key("openai") == "sk-env"
    assert settings.provider_key("anthropic") == "ak-from-file"
    assert settings.provider_key("gemini") is None
    assert settings.provider_key("my-llm") == "custom"
    assert settings.provider_base_url("deepseek") == "http://127.0.0.1:9/deepseek"
    assert settings.daily_budget_usd == 50 and settings.llm_cache_ttl == 0
    assert "sk-env" not in repr(settings)


def test_every_known_remote_provider_has_its_key_and_address_settings() -> None:
    fields = RouterSettings.model_fields
    for provider in REMOTE_PROVIDERS:
        prefix = env_prefix(provider)
        assert env_name(f"{provider}_api_key", fields[f"{provider}_api_key"]) == f"{prefix}_API_KEY"
        assert env_name(f"{provider}_base_url", fields[f"{provider}_base_url"]) == f"{prefix}_BASE_URL"


class MemoryStore:
    def __init__(
        self, providers: list[dict[str, Any]] | None = None, deployments: list[dict[str, Any]] | None = None
    ) -> None:
        self.saved: list[ProviderSnapshot] = []
        self.saved_deployments: list[DeploymentSnapshot] = []
        self.providers = providers or []
        self.deployments = deployments or []

    async def load_provider_metrics(self) -> list[dict[str, Any]]:
        return self.providers

    async def save_provider_metrics(self, snapshots: list[ProviderSnapshot]) -> None:
        self.saved.extend(snapshots)

    async def load_deployment_circuits(self) -> list[dict[str, Any]]:
        return self.deployments

    async def save_deployment_circuits(self, snapshots: list[DeploymentSnapshot]) -> None:
        self.saved_deployments.extend(snapshots)


async def test_state_changes_and_counts_are_persisted_in_one_row_per_provider() -> None:
    store = MemoryStore()
    states = ProviderStates(failure_threshold=2, cooldown_s=30, store=store)
    states.success("p", "p/m", 0.2)
    states.success("p", "p/m", 0.4)
    states.failure("p")
    states.failure("p")
    assert metric("goblin_router_circuit_state", provider="p", model="*") == 2
    await states.flush()
    [row] = store.saved
    assert (row.provider, row.circuit_state, row.consecutive_failures) == ("p", "open", 2)
    assert (row.success_delta, row.failure_delta) == (2, 2)
    assert row.p50_latency_ms == pytest.approx(300) and row.opened_at is not None
    await states.flush()
    assert len(store.saved) == 1, "nothing changed, nothing written"
    assert states.latency_p50("p/other", "p") == pytest.approx(0.3), (
        "a model never measured borrows its provider's latency"
    )


async def test_failures_are_written_at_once_successes_at_the_interval_or_when_stopping() -> None:
    store = MemoryStore()
    states = ProviderStates(failure_threshold=2, cooldown_s=30, store=store, stats_flush_s=3600)
    await states.start()
    assert await states.healthy()
    states.success("q", "q/m", 0.1)
    await asyncio.sleep(0.02)
    assert store.saved == [], "a success waits for the next interval"
    states.failure("q")
    states.failure("q")  # opens the circuit
    for _ in range(200):
        if store.saved:
            break
        await asyncio.sleep(0.005)
    assert [(r.provider, r.circuit_state, r.success_delta) for r in store.saved] == [("q", "open", 1)]
    states.success_without_latency("q")  # its health says it answers again
    states.success("q", "q/m", 0.1)
    await states.stop()
    assert not await states.healthy()
    assert [(r.circuit_state, r.success_delta) for r in store.saved[1:]] == [("closed", 1)], "stopping writes the rest"


async def test_deployment_circuits_are_persisted_apart_from_the_provider_wide_one() -> None:
    store = MemoryStore()
    states = ProviderStates(failure_threshold=2, cooldown_s=30, store=store)
    states.failure("d", "d/one")
    states.failure("d", "d/one")
    states.failure("d", hold_s=120)  # connections fail: the provider-wide circuit, held by a Retry-After
    await states.flush()
    [deployment] = store.saved_deployments
    assert (deployment.provider, deployment.model, deployment.circuit_state) == ("d", "d/one", "open")
    assert (deployment.open_until - deployment.opened_at).total_seconds() == pytest.approx(30)
    [provider] = store.saved
    assert (provider.provider, provider.circuit_state) == ("d", "open")
    assert (provider.open_until - provider.opened_at).total_seconds() == pytest.approx(120)
    assert metric("goblin_router_circuit_state", provider="d", model="d/one") == 2
    assert metric("goblin_router_circuit_state", provider="d", model="*") == 2


async def test_persisted_circuits_come_back_on_their_own_wall_clock_schedule() -> None:
    now = datetime.now(UTC)
    store = MemoryStore(
        providers=[
            # opened a day ago with a 30 s cooldown: long over
            {
                "provider": "old",
                "circuit_state": "open",
                "consecutive_failures": 5,
                "opened_at": now - timedelta(days=1),
            },
        ],
        deployments=[
            {
                "provider": "r",
                "model": "r/held",
                "circuit_state": "open",
                "consecutive_failures": 1,
                "opened_at": now - timedelta(seconds=10),
                "open_until": now + timedelta(seconds=50),  # a 429 asked for 60 s
            },
            {
                "provider": "r",
                "model": "r/stale",
                "circuit_state": "open",
                "consecutive_failures": 5,
                "opened_at": now - timedelta(hours=2),
                "open_until": now - timedelta(hours=2) + timedelta(seconds=30),
            },
        ],
    )
    states = ProviderStates(failure_threshold=5, cooldown_s=30, store=store)
    await states.restore()
    assert states.breaker("old").state == "closed" and states.breaker("old").consecutive_failures == 0
    assert states.blocking("old", "old/m") is None and states.blocking("old", "old/m") is None
    held = states.breaker("r", "r/held")
    assert held.state == "open" and 48 <= held.retry_after() <= 50
    assert states.blocking("r", "r/held") is held
    assert states.blocking("r", "r/stale") is None and states.blocking("r", "r/stale") is None
    assert metric("goblin_router_circuit_state", provider="r", model="r/held") == 2
    assert metric("goblin_router_circuit_state", provider="r", model="r/stale") == 0
