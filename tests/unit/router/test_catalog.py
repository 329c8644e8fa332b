"""The catalog: the shipped YAML, an operator's override file, database rows, and validation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.common.settings import ConfigError
from services.common.topology import REMOTE_PROVIDERS
from services.router.catalog import build_catalog, check_layer, db_layer, load_file_layers, merge_layers


def test_the_shipped_catalog_covers_every_known_provider_with_prices() -> None:
    catalog = build_catalog(load_file_layers(None))
    assert set(REMOTE_PROVIDERS) <= set(catalog.providers)
    for name in REMOTE_PROVIDERS:
        chat = [m for m in catalog.models_of(name) if "chat" in m.capabilities]
        assert chat, f"no chat model for {name}"
        assert all(m.input_price_per_mtok > 0 and m.output_price_per_mtok > 0 and m.context_length for m in chat)
    assert catalog.providers["openai"].max_tokens_field == "max_completion_tokens"
    assert catalog.providers["deepseek"].max_tokens_field == "max_tokens"
    assert catalog.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    assert catalog.providers["grok"].api_key_env == "GROK_API_KEY"
    assert catalog.models["anthropic/claude-sonnet-4-5"].input_price_per_mtok == 3.0
    assert catalog.alias("claude-sonnet") == ("anthropic/claude-sonnet-4-5",)
    assert catalog.policies["cheapest-chat"].strategy == "cheapest"


def test_an_override_file_changes_adds_and_removes_entries(tmp_path: Path) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        """
providers:
  openrouter:
    kind: openai_compatible
    base_url: https://openrouter.ai/api/v1
    headers: {HTTP-Referer: https://goblin.example}
  moonshot: {enabled: false}
models:
  openai/gpt-4o-mini: {input_price_per_mtok: 0.2}
  openai/gpt-4o: {enabled: false}
  openrouter/meta-llama/llama-3.3-70b-instruct:
    aliases: [llama-70b]
    context_length: 131072
    input_price_per_mtok: 0.13
    output_price_per_mtok: 0.40
policies:
  house:
    strategy: weighted
    models: [openai/gpt-4o-mini, openrouter/meta-llama/llama-3.3-70b-instruct]
    weights: [1, 4]
    is_default: true
"""
    )
    catalog = build_catalog(load_file_layers(override))
    mini = catalog.models["openai/gpt-4o-mini"]
    assert mini.input_price_per_mtok == 0.2 and mini.output_price_per_mtok == 0.6  # field-wise merge
    assert "openai/gpt-4o" not in catalog.models
    assert "moonshot" not in catalog.providers and not catalog.models_of("moonshot")
    router = catalog.providers["openrouter"]
    assert router.api_key_env == "OPENROUTER_API_KEY" and router.headers == (
        ("HTTP-Referer", "https://goblin.example"),
    )
    assert catalog.alias("llama-70b") == ("openrouter/meta-llama/llama-3.3-70b-instruct",)
    assert catalog.default_policy("anyone").name == "house"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {gpt: {}}", "model ids are '<provider>/<model>'"),
        ("models: {nope/x: {}}", "no provider 'nope'"),
        (
            "models: {openai/x: {input_price_per_mtok: -1}}",
            "bad.yaml: models.openai/x.input_price_per_mtok: must be greater than or equal to 0",
        ),
        (
            "models: {openai/x: {input_price_per_mtok: cheap}}",
            "bad.yaml: models.openai/x.input_price_per_mtok: must be a valid number",
        ),
        ("models: {openai/x: {input_price_per_mtok: .inf}}", "input_price_per_mtok: must be a finite number"),
        ("providers: {x: {priority: true}}", "bad.yaml: providers.x.priority: must be a valid integer"),
        ("policies: {p: {weights: [a]}}", "bad.yaml: policies.p.weights.0: must be a valid integer"),
        ("models: {openai/x: 3}", "bad.yaml: models.openai/x: must be a mapping of fields"),
        ("models: [1]", "bad.yaml: models: must be a mapping of name -> fields"),
        ("models: {openai/x: {capabilities: [telepathy]}}", "unknown capabilities"),
        ("models: {openai/x: {colour: red}}", "bad.yaml: models.openai/x: unknown field 'colour'"),
        ("providers: {x: {kind: soap, base_url: https://x}}", "kind must be one of"),
        (
            "providers: {x: {kind: openai_compatible, base_url: ftp://x}}",
            "base_url must be an http\\(s\\) URL",
        ),
        ("policies: {p: {strategy: vibes, models: []}}", "strategy must be one of"),
        (
            "policies: {p: {strategy: weighted, models: [openai/gpt-4o], weights: [1, 2]}}",
            "2 weights for 1 models",
        ),
        ("routes: {}", "bad.yaml: unknown section 'routes'"),
        ("models: [", "not valid YAML"),
    ],
)
def test_bad_catalog_files_are_refused_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_catalog(load_file_layers(path))


def test_a_missing_catalog_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GOBLIN_CATALOG_FILE: cannot read"):
        load_file_layers(tmp_path / "missing.yaml")


def test_database_rows_override_the_files() -> None:
    providers = [
        {"name": "local", "kind": "local", "base_url": None, "enabled": True, "priority": 1, "weight": 5},
        {
            "name": "vllm",
            "kind": "openai_compatible",
            "base_url": "http://vllm:8000/v1",
            "enabled": True,
            "priority": 5,
            "weight": 2,
        },
        {
            "name": "grok",
            "kind": "openai_compatible",
            "base_url": None,
            "enabled": False,
            "priority": 100,
            "weight": 1,
        },
    ]
    models = [
        {
            "id": "vllm/qwen3-32b",
            "provider": "vllm",
            "model": "qwen3-32b",
            "aliases": ["qwen"],
            "context_length": 32768,
            "input_price_per_mtok": Decimal("0"),
            "output_price_per_mtok": Decimal("0"),
            "capabilities": [],
            "default_params": '{"temperature": 0.7}',
            "enabled": True,
        },
        {
            "id": "openai/gpt-4o-mini",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "aliases": [],
            "context_length": None,
            "input_price_per_mtok": Decimal("0.100000"),
            "output_price_per_mtok": Decimal("0.400000"),
            "capabilities": [],
            "default_params": "{}",
            "enabled": True,
        },
    ]
    policies = [
        {
            "name": "acme-default",
            "tenant_id": "acme",
            "strategy": "cheapest",
            "models": ["vllm/qwen3-32b"],
            "weights": [],
            "is_default": True,
        }
    ]
    catalog = build_catalog(merge_layers(load_file_layers(None), db_layer(providers, models, policies)))
    assert (catalog.providers["local"].priority, catalog.providers["local"].weight) == (1, 5)
    assert catalog.providers["vllm"].priority == 5 and catalog.providers["vllm"].base_url == "http://vllm:8000/v1"
    assert "grok" not in catalog.providers and not catalog.models_of("grok")
    qwen = catalog.models["vllm/qwen3-32b"]
    assert qwen.capabilities == ("chat", "streaming") and qwen.default_params == {"temperature": 0.7}
    mini = catalog.models["openai/gpt-4o-mini"]
    assert (mini.input_price_per_mtok, mini.output_price_per_mtok, mini.context_length) == (0.1, 0.4, 128000)
    assert mini.aliases == ("gpt-4o-mini",)  # an empty array keeps the file's aliases
    assert catalog.default_policy("acme").name == "acme-default"
    assert catalog.default_policy("other") is None
    assert catalog.policy("acme-default", "other") is None


def test_empty_entries_and_numeric_names_are_what_the_author_meant(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("providers:\n  local:\nmodels:\n  local/tiny:\npolicies:\n  7: {strategy: cheapest}\n")
    catalog = build_catalog(load_file_layers(path))
    assert "local/tiny" in catalog.models and catalog.models["local/tiny"].capabilities == ("chat", "streaming")
    assert catalog.policies["7"].strategy == "cheapest"


def test_layers_keep_only_the_fields_they_set_so_they_merge_field_by_field() -> None:
    layer = check_layer({"models": {"openai/x": {"input_price_per_mtok": 1}}}, "test")
    assert layer == {"providers": {}, "models": {"openai/x": {"input_price_per_mtok": 1.0}}, "policies": {}}
