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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.background import BackgroundLoop
from services.common.settings import ConfigError
from services.common.topology import LOCAL_PROVIDER
from services.router.config import env_prefix
from services.router.models import ModelInfo
from services.router.policy import STRATEGIES

log = logging.getLogger(__name__)

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini")
# What a model can do; the last five are what a request may need (services.common.chat_content).
CAPABILITIES = ("chat", "streaming", "embeddings", "tools", "json", "json_schema", "vision", "logprobs")
DEFAULT_CAPABILITIES = ("chat", "streaming")
SAMPLING_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")
LOCAL = LOCAL_PROVIDER

NonNegativeInt = Annotated[int, Field(ge=0)]
Price = Annotated[float, Field(ge=0)]  # USD per million tokens; an int in YAML is fine


class _Entry(BaseModel):
    """Strict: a string where a number belongs, or a misspelt field, is an error rather than a guess."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    enabled: bool = True


class ProviderEntry(_Entry):
    """A ``providers.<name>`` entry. ``None`` defaults are worked out when the catalog is built."""

    kind: str | None = None
    base_url: str = ""
    api_key_env: str | None = None  # default <NAME>_API_KEY
    priority: NonNegativeInt = 100
    weight: NonNegativeInt = 1
    http2: bool = True
    headers: dict[str, Any] = {}
    max_tokens_field: str | None = None  # default by kind
    stream_usage: bool = True


class ModelEntry(_Entry):
    """A ``models.<provider>/<model>`` entry."""

    aliases: list[Any] = []
    context_length: NonNegativeInt = 0
    max_output_tokens: NonNegativeInt = 0
    input_price_per_mtok: Price = 0.0
    output_price_per_mtok: Price = 0.0
    capabilities: list[str] = []  # empty: DEFAULT_CAPABILITIES
    drop_params: list[str] = []
    default_params: dict[str, Any] = {}


class PolicyEntry(_Entry):
    """A ``policies.<name>`` entry."""

    strategy: str | None = None
    models: list[Any] = []
    weights: list[int] = []
    tenant_id: str | None = None
    is_default: bool = False


class CatalogLayer(BaseModel):
    """One layer (a YAML file, or the database's rows): every entry holds only the fields it sets."""

    model_config = ConfigDict(extra="forbid", strict=True)

    providers: dict[str, ProviderEntry] = {}
    models: dict[str, ModelEntry] = {}
    policies: dict[str, PolicyEntry] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_means_empty(cls, data: Any) -> Any:
        # YAML writes an empty section or entry as null (``models:``, ``openai/x:``), and a name as a
        # number if it looks like one: both are what the author meant, not errors.
        if not isinstance(data, dict):
            return data
        return {
            section: {str(name): entry or {} for name, entry in entries.items()}
            if isinstance(entries, dict)
            else (entries if entries is not None else {})
            for section, entries in data.items()
        }


SECTIONS = {"providers": ProviderEntry, "models": ModelEntry, "policies": PolicyEntry}

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
    """``data`` checked against :class:`CatalogLayer`, as plain dicts of the fields each entry sets (so
    that layers merge field by field); errors name ``source`` and the entry's field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the catalog must be a mapping with providers/models/policies")
    try:
        layer = CatalogLayer.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(error) for error in exc.errors())) from None
    dumped = layer.model_dump(exclude_unset=True)
    return {section: dumped.get(section, {}) for section in SECTIONS}


def _describe(error: Any) -> str:
    """One pydantic error as ``<section>.<name>.<field>: <problem>``, in the catalog's words."""
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"unknown section {loc[0]!r}; expected {sorted(SECTIONS)}"
        return f"{'.'.join(loc[:2])}: unknown field {loc[-1]!r}"
    if error["type"] == "dict_type" and len(loc) == 1:
        problem = "must be a mapping of name -> fields"
    elif error["type"] == "model_type":
        problem = "must be a mapping of fields"
    else:
        problem = error["msg"].replace("Input should be", "must be")
    return f"{'.'.join(loc)}: {problem}"


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
    """Validate the merged layers and make the immutable catalog (disabled entries left out)."""
    providers = _providers(raw.get("providers", {}))
    models = _models(raw.get("models", {}), providers, disabled=set(raw.get("providers", {})) - set(providers))
    aliases: dict[str, list[str]] = {}
    for info in models.values():
        for alias in info.aliases:
            aliases.setdefault(alias, []).append(info.id)
    return Catalog(
        providers=providers,
        models=models,
        policies=_policies(raw.get("policies", {})),
        aliases={k: tuple(v) for k, v in aliases.items()},
    )


def _providers(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderSpec]:
    providers: dict[str, ProviderSpec] = {}
    for name, fields in entries.items():
        entry = ProviderEntry.model_validate(fields)
        if not entry.enabled:
            continue
        where = f"catalog: providers.{name}"
        if name == LOCAL or entry.kind == LOCAL:
            # The inference service is built in: only its priority and weight are set here.
            if name != LOCAL or entry.kind not in (None, LOCAL):
                raise ConfigError(f"{where}: kind 'local' is the built-in provider named 'local' only")
            providers[LOCAL] = ProviderSpec(
                name=LOCAL, kind=LOCAL, base_url="", api_key_env="", priority=entry.priority, weight=entry.weight
            )
            continue
        if "/" in name or not name:
            raise ConfigError(f"{where}: '{name}' is not a usable provider name")
        if entry.kind not in PROVIDER_KINDS:
            raise ConfigError(f"{where}: kind must be one of {list(PROVIDER_KINDS)}, not {entry.kind!r}")
        if not entry.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: base_url must be an http(s) URL")
        providers[name] = ProviderSpec(
            name=name,
            kind=entry.kind,
            base_url=entry.base_url.rstrip("/"),
            api_key_env=entry.api_key_env or f"{env_prefix(name)}_API_KEY",
            priority=entry.priority,
            weight=entry.weight,
            http2=entry.http2,
            headers=tuple(sorted((str(k), str(v)) for k, v in entry.headers.items())),
            max_tokens_field=entry.max_tokens_field
            or ("max_completion_tokens" if entry.kind == "openai" else "max_tokens"),
            stream_usage=entry.stream_usage,
        )
    return providers


def _models(
    entries: Mapping[str, Mapping[str, Any]], providers: Mapping[str, ProviderSpec], *, disabled: set[str]
) -> dict[str, ModelInfo]:
    models: dict[str, ModelInfo] = {}
    for model_id, fields in entries.items():
        entry = ModelEntry.model_validate(fields)
        if not entry.enabled:
            continue
        where = f"catalog: models.{model_id}"
        provider, _, model = model_id.partition("/")
        if not model:
            raise ConfigError(f"{where}: model ids are '<provider>/<model>'")
        if provider not in providers:
            if provider in disabled:
                continue
            raise ConfigError(f"{where}: no provider '{provider}' in the catalog")
        capabilities = tuple(entry.capabilities or DEFAULT_CAPABILITIES)
        bad = set(capabilities) - set(CAPABILITIES)
        if bad:
            raise ConfigError(f"{where}: unknown capabilities {sorted(bad)}; known: {list(CAPABILITIES)}")
        for key in (*entry.drop_params, *entry.default_params):
            if key not in SAMPLING_PARAMS:
                raise ConfigError(f"{where}: unknown sampling parameter {key!r}; known: {list(SAMPLING_PARAMS)}")
        models[model_id] = ModelInfo(
            id=model_id,
            provider=provider,
            owned_by=provider,
            context_length=entry.context_length,
            capabilities=capabilities,
            input_price_per_mtok=entry.input_price_per_mtok,
            output_price_per_mtok=entry.output_price_per_mtok,
            aliases=tuple(str(a) for a in entry.aliases),
            max_output_tokens=entry.max_output_tokens,
            drop_params=tuple(entry.drop_params),
            default_params=dict(entry.default_params),
        )
    return models


def _policies(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, PolicySpec]:
    policies: dict[str, PolicySpec] = {}
    for name, fields in entries.items():
        entry = PolicyEntry.model_validate(fields)
        if not entry.enabled:
            continue
        where = f"catalog: policies.{name}"
        if entry.strategy not in STRATEGIES:
            raise ConfigError(f"{where}: strategy must be one of {list(STRATEGIES)}, not {entry.strategy!r}")
        if name in STRATEGIES:
            raise ConfigError(f"{where}: a policy cannot be named like a strategy")
        members = tuple(str(m) for m in entry.models)
        if entry.weights and len(entry.weights) != len(members):
            raise ConfigError(f"{where}: {len(entry.weights)} weights for {len(members)} models")
        if any(w < 0 for w in entry.weights):
            raise ConfigError(f"{where}: weights must be >= 0")
        policies[name] = PolicySpec(
            name=name,
            strategy=entry.strategy,
            models=members,
            weights=tuple(entry.weights),
            tenant_id=entry.tenant_id or None,
            is_default=entry.is_default,
        )
    return policies


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
