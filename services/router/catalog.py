"""The provider/model catalog: which providers exist, what each model costs, reads and can do, and the
named routing policies.

Layers, each overriding the one before field by field (``enabled: false`` removes an entry):

1. ``catalog.yaml`` shipped next to this module;
2. the file named by ``GOBLIN_CATALOG_FILE``;
3. rows of the ``providers``, ``model_configs`` and ``provider_policies`` tables.

A :class:`Catalog` is immutable; the router builds a new one when a layer changes and swaps it in.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from services.common.background import BackgroundLoop
from services.common.settings import ConfigError
from services.router.config import env_prefix
from services.router.models import ModelInfo
from services.router.policy import STRATEGIES

log = logging.getLogger(__name__)

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini")
CAPABILITIES = ("chat", "streaming", "embeddings")
DEFAULT_CAPABILITIES = ("chat", "streaming")
SAMPLING_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")
LOCAL = "local"

PROVIDER_FIELDS = {
    "kind": str,
    "base_url": str,
    "api_key_env": str,
    "enabled": bool,
    "priority": int,
    "weight": int,
    "http2": bool,
    "headers": dict,
    "max_tokens_field": str,
    "stream_usage": bool,
}
MODEL_FIELDS = {
    "aliases": list,
    "context_length": int,
    "max_output_tokens": int,
    "input_price_per_mtok": float,
    "output_price_per_mtok": float,
    "capabilities": list,
    "drop_params": list,
    "default_params": dict,
    "enabled": bool,
}
POLICY_FIELDS = {
    "strategy": str,
    "models": list,
    "weights": list,
    "tenant_id": str,
    "is_default": bool,
    "enabled": bool,
}
SECTIONS = {"providers": PROVIDER_FIELDS, "models": MODEL_FIELDS, "policies": POLICY_FIELDS}

RawCatalog = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str
    base_url: str
    api_key_env: str
    priority: int = 100
    weight: int = 1
    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = True


@dataclass(frozen=True)
class PolicySpec:
    name: str
    strategy: str
    models: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()
    tenant_id: str | None = None
    is_default: bool = False

    def visible_to(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


@dataclass(frozen=True)
class Catalog:
    providers: Mapping[str, ProviderSpec]
    models: Mapping[str, ModelInfo]
    policies: Mapping[str, PolicySpec]
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def alias(self, name: str) -> tuple[str, ...]:
        """Model ids that answer to ``name``, in catalog order."""
        return self.aliases.get(name, ())

    def policy(self, name: str, tenant_id: str) -> PolicySpec | None:
        policy = self.policies.get(name)
        return policy if policy is not None and policy.visible_to(tenant_id) else None

    def default_policy(self, tenant_id: str) -> PolicySpec | None:
        """The tenant's default policy, else the global one."""
        defaults = [p for p in self.policies.values() if p.is_default and p.visible_to(tenant_id)]
        defaults.sort(key=lambda p: p.tenant_id is None)
        return defaults[0] if defaults else None

    def models_of(self, provider: str) -> list[ModelInfo]:
        return [m for m in self.models.values() if m.provider == provider]


# -- layers ------------------------------------------------------------------------------------------


def read_catalog_file(path: Path) -> RawCatalog:
    """One YAML layer, checked for shape (unknown sections or fields, wrong types) with errors that
    name the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"GOBLIN_CATALOG_FILE: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return check_layer(data, str(path))


def check_layer(data: Any, source: str) -> RawCatalog:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the catalog must be a mapping with providers/models/policies")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; expected {sorted(SECTIONS)}")
    layer: RawCatalog = {}
    for section, fields in SECTIONS.items():
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{source}: {section} must be a mapping of name -> fields")
        layer[section] = {}
        for name, entry in entries.items():
            where = f"{source}: {section}.{name}"
            entry = entry or {}
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: must be a mapping of fields")
            for key, value in entry.items():
                expected = fields.get(key)
                if expected is None:
                    raise ConfigError(f"{where}: unknown field {key!r}")
                entry[key] = _coerce(value, expected, f"{where}.{key}")
            layer[section][str(name)] = entry
    return layer


def _coerce(value: Any, expected: type, where: str) -> Any:
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: must be a number >= 0")
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{where}: must be >= 0")
        return value
    if expected in (str, bool, list, dict) and isinstance(value, expected):
        return value
    raise ConfigError(f"{where}: must be {expected.__name__}, not {type(value).__name__}")


def merge_layers(*layers: RawCatalog) -> RawCatalog:
    """Later layers override earlier ones field by field."""
    merged: RawCatalog = {section: {} for section in SECTIONS}
    for layer in layers:
        for section in SECTIONS:
            for name, entry in (layer.get(section) or {}).items():
                merged[section].setdefault(name, {}).update(copy.deepcopy(entry))
    return merged


def db_layer(
    provider_rows: Iterable[Mapping[str, Any]],
    model_rows: Iterable[Mapping[str, Any]],
    policy_rows: Iterable[Mapping[str, Any]],
) -> RawCatalog:
    """The database's rows as a catalog layer. NULL columns and empty arrays keep the lower layers'
    values; prices are NOT NULL in the table, so a row always sets them."""
    layer: RawCatalog = {section: {} for section in SECTIONS}
    for row in provider_rows:
        entry: dict[str, Any] = {"kind": row["kind"], "enabled": bool(row["enabled"])}
        for key in ("base_url", "priority", "weight"):
            if row.get(key) is not None:
                entry[key] = row[key]
        layer["providers"][row["name"]] = entry
    for row in model_rows:
        model_id = row["id"] if "/" in row["id"] else f"{row['provider']}/{row['model']}"
        entry = {
            "input_price_per_mtok": float(row["input_price_per_mtok"]),
            "output_price_per_mtok": float(row["output_price_per_mtok"]),
            "enabled": bool(row["enabled"]),
        }
        if row.get("context_length") is not None:
            entry["context_length"] = row["context_length"]
        for key in ("aliases", "capabilities"):
            if row.get(key):
                entry[key] = list(row[key])
        defaults = row.get("default_params") or {}
        if isinstance(defaults, str):  # asyncpg returns JSONB as text unless told otherwise
            defaults = json.loads(defaults)
        if defaults:
            entry["default_params"] = dict(defaults)
        layer["models"][model_id] = entry
    for row in policy_rows:
        entry = {
            "strategy": row["strategy"],
            "models": list(row["models"] or ()),
            "weights": list(row["weights"] or ()),
            "is_default": bool(row["is_default"]),
        }
        if row.get("tenant_id"):
            entry["tenant_id"] = row["tenant_id"]
        layer["policies"][row["name"]] = entry
    return check_layer(layer, "database")


# -- building -----------------------------------------------------------------------------------------


def build_catalog(raw: RawCatalog) -> Catalog:
    """Validate the merged layers and make the immutable catalog."""
    providers: dict[str, ProviderSpec] = {}
    for name, entry in raw.get("providers", {}).items():
        if not entry.get("enabled", True):
            continue
        where = f"catalog: providers.{name}"
        kind = entry.get("kind")
        if name == LOCAL or kind == LOCAL:
            # The inference service is built in: only its priority and weight are set here.
            if name != LOCAL or kind not in (None, LOCAL):
                raise ConfigError(f"{where}: kind 'local' is the built-in provider named 'local' only")
            providers[LOCAL] = ProviderSpec(
                name=LOCAL,
                kind=LOCAL,
                base_url="",
                api_key_env="",
                priority=entry.get("priority", 100),
                weight=entry.get("weight", 1),
            )
            continue
        if "/" in name or not name:
            raise ConfigError(f"{where}: '{name}' is not a usable provider name")
        if kind not in PROVIDER_KINDS:
            raise ConfigError(f"{where}: kind must be one of {list(PROVIDER_KINDS)}, not {kind!r}")
        base_url = entry.get("base_url") or ""
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: base_url must be an http(s) URL")
        providers[name] = ProviderSpec(
            name=name,
            kind=kind,
            base_url=base_url.rstrip("/"),
            api_key_env=entry.get("api_key_env") or f"{env_prefix(name)}_API_KEY",
            priority=entry.get("priority", 100),
            weight=entry.get("weight", 1),
            http2=entry.get("http2", True),
            headers=tuple(sorted((str(k), str(v)) for k, v in (entry.get("headers") or {}).items())),
            max_tokens_field=entry.get("max_tokens_field")
            or ("max_completion_tokens" if kind == "openai" else "max_tokens"),
            stream_usage=entry.get("stream_usage", True),
        )

    models: dict[str, ModelInfo] = {}
    aliases: dict[str, list[str]] = {}
    for model_id, entry in raw.get("models", {}).items():
        if not entry.get("enabled", True):
            continue
        where = f"catalog: models.{model_id}"
        provider, _, model = model_id.partition("/")
        if not model:
            raise ConfigError(f"{where}: model ids are '<provider>/<model>'")
        if provider not in providers:
            if provider in raw.get("providers", {}):
                continue  # its provider is disabled
            raise ConfigError(f"{where}: no provider '{provider}' in the catalog")
        capabilities = tuple(entry.get("capabilities") or DEFAULT_CAPABILITIES)
        bad = set(capabilities) - set(CAPABILITIES)
        if bad:
            raise ConfigError(f"{where}: unknown capabilities {sorted(bad)}; known: {list(CAPABILITIES)}")
        drop = tuple(entry.get("drop_params") or ())
        defaults = dict(entry.get("default_params") or {})
        for key in (*drop, *defaults):
            if key not in SAMPLING_PARAMS:
                raise ConfigError(f"{where}: unknown sampling parameter {key!r}; known: {list(SAMPLING_PARAMS)}")
        info = ModelInfo(
            id=model_id,
            provider=provider,
            owned_by=provider,
            context_length=entry.get("context_length", 0),
            capabilities=capabilities,
            input_price_per_mtok=entry.get("input_price_per_mtok", 0.0),
            output_price_per_mtok=entry.get("output_price_per_mtok", 0.0),
            aliases=tuple(str(a) for a in entry.get("aliases") or ()),
            max_output_tokens=entry.get("max_output_tokens", 0),
            drop_params=drop,
            default_params=defaults,
        )
        models[model_id] = info
        for alias in info.aliases:
            aliases.setdefault(alias, []).append(model_id)

    policies: dict[str, PolicySpec] = {}
    for name, entry in raw.get("policies", {}).items():
        if not entry.get("enabled", True):
            continue
        where = f"catalog: policies.{name}"
        strategy = entry.get("strategy")
        if strategy not in STRATEGIES:
            raise ConfigError(f"{where}: strategy must be one of {list(STRATEGIES)}, not {strategy!r}")
        if name in STRATEGIES:
            raise ConfigError(f"{where}: a policy cannot be named like a strategy")
        members = tuple(str(m) for m in entry.get("models") or ())
        weights = tuple(int(w) for w in entry.get("weights") or ())
        if weights and len(weights) != len(members):
            raise ConfigError(f"{where}: {len(weights)} weights for {len(members)} models")
        if any(w < 0 for w in weights):
            raise ConfigError(f"{where}: weights must be >= 0")
        policies[name] = PolicySpec(
            name=name,
            strategy=strategy,
            models=members,
            weights=weights,
            tenant_id=entry.get("tenant_id") or None,
            is_default=entry.get("is_default", False),
        )
    return Catalog(
        providers=providers,
        models=models,
        policies=policies,
        aliases={k: tuple(v) for k, v in aliases.items()},
    )


def load_file_layers(override: Path | None) -> RawCatalog:
    """The shipped catalog merged with the operator's file."""
    layers = [read_catalog_file(BUILTIN_CATALOG)]
    if override is not None:
        layers.append(read_catalog_file(override))
    return merge_layers(*layers)


class CatalogRows(Protocol):
    async def catalog_rows(
        self,
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]: ...


class CatalogManager:
    """Keeps the catalog current: the file layers merged with the database rows, re-read every
    ``refresh_s``. A database layer that does not validate is logged and ignored (the previous
    catalog stays), so a bad row cannot take routing down."""

    def __init__(
        self,
        file_layers: RawCatalog,
        rows: CatalogRows,
        on_change: Callable[[Catalog], None],
        *,
        refresh_s: float = 30.0,
    ) -> None:
        self.file_layers = file_layers
        self.rows = rows
        self.on_change = on_change
        self.refresh_s = refresh_s
        self.current = build_catalog(file_layers)
        self._raw = file_layers
        self._reloader = BackgroundLoop(
            "catalog-refresh",
            self.refresh,
            every_s=refresh_s,
            failure_message="could not refresh the catalog from the database",
            logger=log,
        )

    async def refresh(self) -> None:
        providers, models, policies = await self.rows.catalog_rows()
        try:
            raw = merge_layers(self.file_layers, db_layer(providers, models, policies))
            if raw == self._raw:
                return
            catalog = build_catalog(raw)
        except ConfigError as exc:
            log.error("catalog rows in the database are invalid and were ignored: %s", exc)
            return
        try:
            self.on_change(catalog)
        except ConfigError as exc:
            log.error("the catalog from the database could not be applied: %s", exc)
            return
        self._raw, self.current = raw, catalog
        log.info(
            "catalog loaded",
            extra={"providers": len(catalog.providers), "models": len(catalog.models)},
        )

    async def start(self) -> None:
        """Read the database rows once, then every ``refresh_s`` in the background."""
        await self.refresh()
        await self._reloader.start()

    async def healthy(self) -> bool:
        """Whether the background reload is running."""
        return await self._reloader.healthy()

    async def stop(self) -> None:
        """Stop reloading."""
        await self._reloader.stop()
