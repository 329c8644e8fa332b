"""Router service settings.

Provider keys use the names people already have (``OPENAI_API_KEY``...), each also readable from
``NAME_FILE``, with a ``*_BASE_URL`` override. Providers declared only in a catalog file or in the
``providers`` table name their key variable (``api_key_env``); :func:`read_env_secret` reads those with
the same ``NAME`` / ``NAME_FILE`` rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr

from services.common.secrets import SecretScanningSettings
from services.common.settings import ConfigError, DatabaseSettings, RedisSettings, ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS, REMOTE_PROVIDERS


def env_prefix(provider: str) -> str:
    """``my-llm`` -> ``MY_LLM``: the prefix of a provider's ``*_API_KEY`` / ``*_BASE_URL`` variables."""
    return re.sub(r"[^A-Z0-9]", "_", provider.upper())


def read_env_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``NAME`` from the environment, else the contents of the file named by ``NAME_FILE``."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if value:
        return value
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc


class RouterSettings(RedisSettings, ServiceSettings, DatabaseSettings, SecretScanningSettings):
    # RedisSettings first: its field is listed after the service's own in error messages.
    grpc_port: int = Field(GRPC_PORTS["router"], alias="GOBLIN_ROUTER_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["router"], alias="GOBLIN_ROUTER_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_ROUTER_PROBE_PORT", ge=0, le=65535)

    # -- providers ------------------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(None, alias="ANTHROPIC_BASE_URL")
    gemini_api_key: SecretStr | None = Field(None, alias="GEMINI_API_KEY")
    gemini_base_url: str | None = Field(None, alias="GEMINI_BASE_URL")
    deepseek_api_key: SecretStr | None = Field(None, alias="DEEPSEEK_API_KEY")
    deepseek_base_url: str | None = Field(None, alias="DEEPSEEK_BASE_URL")
    grok_api_key: SecretStr | None = Field(None, alias="GROK_API_KEY")
    grok_base_url: str | None = Field(None, alias="GROK_BASE_URL")
    moonshot_api_key: SecretStr | None = Field(None, alias="MOONSHOT_API_KEY")
    moonshot_base_url: str | None = Field(None, alias="MOONSHOT_BASE_URL")
    siliconflow_api_key: SecretStr | None = Field(None, alias="SILICONFLOW_API_KEY")
    siliconflow_base_url: str | None = Field(None, alias="SILICONFLOW_BASE_URL")

    # -- catalog --------------------------------------------------------------------------------
    catalog_file: Path | None = Field(None, alias="GOBLIN_CATALOG_FILE")
    catalog_refresh_s: float = Field(30.0, alias="GOBLIN_CATALOG_REFRESH_S", gt=0)

    # -- calling providers ----------------------------------------------------------------------
    provider_timeout_s: float = Field(120.0, alias="GOBLIN_PROVIDER_TIMEOUT_S", gt=0)
    provider_connect_timeout_s: float = Field(5.0, alias="GOBLIN_PROVIDER_CONNECT_TIMEOUT_S", gt=0)
    provider_max_connections: int = Field(100, alias="GOBLIN_PROVIDER_MAX_CONNECTIONS", ge=1)
    retries: int = Field(2, alias="GOBLIN_ROUTER_RETRIES", ge=0, le=10)
    retry_base_s: float = Field(0.2, alias="GOBLIN_ROUTER_RETRY_BASE_S", ge=0)
    retry_max_s: float = Field(4.0, alias="GOBLIN_ROUTER_RETRY_MAX_S", ge=0)
    circuit_failures: int = Field(5, alias="GOBLIN_ROUTER_CIRCUIT_FAILURES", ge=1)
    circuit_cooldown_s: float = Field(30.0, alias="GOBLIN_ROUTER_CIRCUIT_COOLDOWN_S", gt=0)

    # -- books ----------------------------------------------------------------------------------
    daily_budget_usd: float = Field(50.0, alias="GOBLIN_DAILY_BUDGET_USD", ge=0)
    budget_sync_s: float = Field(0.5, alias="GOBLIN_BUDGET_SYNC_S", gt=0)
    budget_reconcile_s: float = Field(60.0, alias="GOBLIN_BUDGET_RECONCILE_S", gt=0)
    llm_cache_ttl: int = Field(0, alias="LLM_CACHE_TTL", ge=0)

    # -- retrieval (goblin.rag) -------------------------------------------------------------------
    rag_timeout_s: float = Field(10.0, alias="GOBLIN_ROUTER_RAG_TIMEOUT_S", gt=0)
    # At most this many tokens of passages go into a prompt, whatever room a large context leaves.
    rag_context_tokens: int = Field(1500, alias="GOBLIN_RAG_CONTEXT_TOKENS", ge=64, le=100_000)

    def provider_key(self, provider: str, api_key_env: str | None = None) -> str | None:
        """The API key of ``provider``: its settings field for the known ones, else ``api_key_env``
        (default ``<PROVIDER>_API_KEY``) read with the ``NAME`` / ``NAME_FILE`` rules."""
        env_name = api_key_env or f"{env_prefix(provider)}_API_KEY"
        if provider in REMOTE_PROVIDERS and env_name == f"{env_prefix(provider)}_API_KEY":
            secret: SecretStr | None = getattr(self, f"{provider}_api_key")
            if secret is None:
                return None
            return secret.get_secret_value().strip() or None
        return read_env_secret(env_name)

    def provider_base_url(self, provider: str) -> str | None:
        """The ``<PROVIDER>_BASE_URL`` override, if any."""
        if provider in REMOTE_PROVIDERS:
            return getattr(self, f"{provider}_base_url") or None
        return os.environ.get(f"{env_prefix(provider)}_BASE_URL") or None
