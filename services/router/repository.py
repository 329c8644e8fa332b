"""Postgres access for the router, apart from the ledger's inserts: the only module here with SQL.

Only the router's own schema (the pool's search_path): tenants and API keys belong to the auth service,
whose limits reach the router in each request's context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.common.stores import PostgresStore
from services.router.budget import Spent
from services.router.provider_state import DeploymentSnapshot, ProviderSnapshot

UPSERT_PROVIDER_METRICS = """
INSERT INTO provider_metrics (provider, circuit_state, consecutive_failures, opened_at, p50_latency_ms,
                              success_count, failure_count, open_until, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (provider, model) DO UPDATE SET
    circuit_state = EXCLUDED.circuit_state,
    consecutive_failures = EXCLUDED.consecutive_failures,
    opened_at = EXCLUDED.opened_at,
    open_until = EXCLUDED.open_until,
    p50_latency_ms = COALESCE(EXCLUDED.p50_latency_ms, provider_metrics.p50_latency_ms),
    success_count = provider_metrics.success_count + EXCLUDED.success_count,
    failure_count = provider_metrics.failure_count + EXCLUDED.failure_count,
    updated_at = now()
"""
UPSERT_DEPLOYMENT_CIRCUIT = """
INSERT INTO provider_metrics (provider, model, circuit_state, consecutive_failures, opened_at, open_until,
                              updated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (provider, model) DO UPDATE SET
    circuit_state = EXCLUDED.circuit_state,
    consecutive_failures = EXCLUDED.consecutive_failures,
    opened_at = EXCLUDED.opened_at,
    open_until = EXCLUDED.open_until,
    updated_at = now()
"""


@dataclass(frozen=True)
class UsageTotals:
    cost_usd: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    errors: int = 0


class RouterRepository:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def catalog_rows(
        self,
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """Rows of providers, model_configs and provider_policies, in a stable order."""
        async with self.store.pool.acquire() as conn:
            providers = await conn.fetch(
                "SELECT name, kind, base_url, enabled, priority, weight FROM providers ORDER BY name"
            )
            models = await conn.fetch(
                """SELECT id, provider, model, aliases, context_length, input_price_per_mtok,
                          output_price_per_mtok, capabilities, default_params::text AS default_params, enabled
                     FROM model_configs ORDER BY id"""
            )
            policies = await conn.fetch(
                """SELECT name, tenant_id, strategy, models, weights, is_default
                     FROM provider_policies ORDER BY name"""
            )
        return [dict(r) for r in providers], [dict(r) for r in models], [dict(r) for r in policies]

    async def spent_since(self, start: datetime) -> Spent:
        """Spend per tenant and in total, and tokens per API key (cache hits excluded), since ``start``."""
        async with self.store.pool.acquire() as conn:
            total = await conn.fetchval(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM routing_requests WHERE created_at >= $1", start
            )
            tenants = await conn.fetch(
                """SELECT tenant_id, SUM(cost_usd) AS cost FROM routing_requests
                    WHERE created_at >= $1 AND tenant_id IS NOT NULL GROUP BY tenant_id""",
                start,
            )
            keys = await conn.fetch(
                """SELECT api_key_id, SUM(prompt_tokens + completion_tokens) AS tokens FROM routing_requests
                    WHERE created_at >= $1 AND api_key_id IS NOT NULL AND outcome <> 'cache_hit'
                    GROUP BY api_key_id""",
                start,
            )
        return Spent(
            global_usd=float(total),
            tenant_usd={r["tenant_id"]: float(r["cost"]) for r in tenants},
            key_tokens={r["api_key_id"]: int(r["tokens"]) for r in keys},
        )

    async def load_provider_metrics(self) -> list[Mapping[str, Any]]:
        rows = await self.store.pool.fetch(
            """SELECT provider, circuit_state, consecutive_failures, opened_at, open_until, p50_latency_ms
                 FROM provider_metrics WHERE model = ''"""
        )
        return [dict(r) for r in rows]

    async def save_provider_metrics(self, snapshots: list[ProviderSnapshot]) -> None:
        await self.store.pool.executemany(
            UPSERT_PROVIDER_METRICS,
            [
                (
                    s.provider,
                    s.circuit_state,
                    s.consecutive_failures,
                    s.opened_at,
                    s.p50_latency_ms,
                    s.success_delta,
                    s.failure_delta,
                    s.open_until,
                )
                for s in snapshots
            ],
        )

    async def load_deployment_circuits(self) -> list[Mapping[str, Any]]:
        rows = await self.store.pool.fetch(
            """SELECT provider, model, circuit_state, consecutive_failures, opened_at, open_until
                 FROM provider_metrics WHERE model <> ''"""
        )
        return [dict(r) for r in rows]

    async def save_deployment_circuits(self, snapshots: list[DeploymentSnapshot]) -> None:
        await self.store.pool.executemany(
            UPSERT_DEPLOYMENT_CIRCUIT,
            [
                (s.provider, s.model, s.circuit_state, s.consecutive_failures, s.opened_at, s.open_until)
                for s in snapshots
            ],
        )

    async def usage(self, tenant_id: str | None, start: datetime) -> UsageTotals:
        """One UTC day of ``routing_requests`` from ``start``, for a tenant or (None) everyone."""
        row = await self.store.pool.fetchrow(
            """SELECT COALESCE(SUM(cost_usd), 0) AS cost, COUNT(*) AS requests,
                      COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,
                      COALESCE(SUM(completion_tokens), 0) AS completion_tokens,
                      COUNT(*) FILTER (WHERE cardinality(fallback_chain) > 1) AS fallbacks,
                      COUNT(*) FILTER (WHERE outcome = 'error') AS errors
                 FROM routing_requests
                WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant_id = $3)""",
            start,
            start + timedelta(days=1),
            tenant_id,
        )
        return UsageTotals(
            cost_usd=float(row["cost"]),
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            fallbacks=int(row["fallbacks"]),
            errors=int(row["errors"]),
        )
