"""Where the KPI document's numbers come from, gathered concurrently for one admin request:

- the gateway's own Prometheus registry (HTTP traffic, chat tokens, secrets caught at the edge);
- every backend's ``/metrics`` listener, scraped over plain HTTP as Prometheus does (the services have
  no stats RPC; their metrics are the stats), at the host of its gRPC address and its metrics port;
- the router's books (``GetUsage``: today, every tenant and each tenant) and ``ListProviders``
  (breakers), and auth's tenants (budgets), with the admin's own signed principal, so each service
  applies its own admin rule;
- the health answers readiness uses, and the gateway's database pool.

A source that fails leaves its part empty and is named in the document's ``errors``: the page shows
what it can rather than a 500. Behind a Kubernetes Service a scrape reaches one replica: the page is
the single-machine view, Grafana the fleet's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from goblin.v1 import auth_pb2, common_pb2, router_pb2
from services.common.principal import outgoing_principal_var
from services.gateway.clients import ServiceHealth
from services.gateway.deps import sign_principal
from services.gateway.errors import ApiError
from services.gateway.kpi import KpiInputs, RateMeter, Samples, build_document, completion_tokens
from services.gateway.kpi_settings import metrics_urls
from services.gateway.state import GatewayState

T = TypeVar("T")
SOURCE_TIMEOUT_S = 2.0
# Each tenant's books are one GetUsage: enough for the page, bounded for a platform with many tenants.
MAX_TENANTS = 50
EVENTS_SHOWN = 20


async def check_everything(state: GatewayState) -> list[ServiceHealth]:
    """Every backend service and the gateway's own stores, checked concurrently (readiness, /health/all
    and the KPI page all ask this)."""
    services, stores = await asyncio.gather(
        state.clients.health.check_all(state.settings.health_timeout_s), state.stores.check()
    )
    return [*services, *stores]


def pool_stats(state: GatewayState) -> dict[str, Any]:
    """The gateway's Postgres pool as the design notes' ``/health/db-pool`` shows it: size (open now),
    max, in use, idle, and callers waiting for a connection."""
    try:
        pool = state.stores.postgres.pool
    except Exception as exc:  # not connected yet: say so rather than fail the page
        return {"status": "not_connected", "error": str(exc)}
    size, idle = pool.get_size(), pool.get_idle_size()
    # asyncpg has no public count of waiters: acquire() waits on the pool's queue, whose getters are
    # them. Read defensively; a newer asyncpg without these attributes shows 0 rather than failing.
    waiting = len(getattr(getattr(pool, "_queue", None), "_getters", ()) or ())
    return {
        "status": "ok",
        "size": size,
        "min_size": pool.get_min_size(),
        "max_size": pool.get_max_size(),
        "in_use": size - idle,
        "idle": idle,
        "waiting": waiting,
    }


def usage_dict(report: router_pb2.UsageReport) -> dict[str, Any]:
    return {
        "day": report.day,
        "cost_usd": round(report.cost_usd, 6),
        "requests": report.requests,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "fallbacks": report.fallbacks,
        "errors": report.errors,
    }


def event_dict(event: auth_pb2.AuditEventSummary) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_type": event.event_type,
        "location": event.location,
        "tenant_id": event.tenant_id,
        "correlation_id": event.correlation_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.created)),
    }


def provider_dict(state: router_pb2.ProviderState) -> dict[str, Any]:
    return {
        "name": state.name,
        "configured": state.configured,
        "circuit": state.circuit,
        "p50_latency_ms": round(state.p50_latency_ms, 2),
        "consecutive_failures": state.consecutive_failures,
    }


class KpiCollector:
    """Gathers :class:`KpiInputs` and builds the document; one per gateway app (it keeps the readings
    the tokens/s rate is measured between)."""

    def __init__(self, state: GatewayState, started_at: float | None = None) -> None:
        self.state = state
        self.started_at = time.time() if started_at is None else started_at
        self.urls = metrics_urls(state.settings)
        self.tokens = RateMeter()

    async def document(self, context: common_pb2.RequestContext, principal: auth_pb2.Principal) -> dict[str, Any]:
        """The KPI document for ``principal`` (an admin): each backend call carries its own signed
        assertion of them, since a service admits each assertion once (replay protection) and this
        request makes several calls to the router."""
        errors: list[str] = []
        router, auth = self.state.clients.router, self.state.clients.auth
        gateway = Samples.from_families(REGISTRY.collect())
        # A client per document: a refresh every few seconds, and no connection to close at shutdown.
        async with httpx.AsyncClient(timeout=SOURCE_TIMEOUT_S, follow_redirects=False, trust_env=False) as http:
            scrapes, health, providers, usage_all, tenants, events = await asyncio.gather(
                asyncio.gather(*(self._scrape(http, name, url, errors) for name, url in self.urls.items())),
                guarded("health", check_everything(self.state), errors),
                guarded("router providers", as_(principal, router.list_providers(SOURCE_TIMEOUT_S)), errors),
                guarded("router usage", as_(principal, router.get_usage(context, "*", SOURCE_TIMEOUT_S)), errors),
                self._tenants(context, principal, errors),
                guarded("auth audit trail", as_(principal, auth.list_audit_events(context, EVENTS_SHOWN)), errors),
            )
        inputs = KpiInputs(
            gateway=gateway,
            services={name: samples for name, samples in scrapes if samples is not None},
            health=[{"name": "gateway", "status": "SERVING"}, *({"name": h.name, **h.as_dict()} for h in health or ())],
            providers=[provider_dict(p) for p in providers or ()],
            usage_all=usage_dict(usage_all) if usage_all is not None else None,
            tenants=tenants,
            events=[event_dict(e) for e in events or ()],
            errors=errors,
            tokens_per_s=self.tokens.observe(completion_tokens(gateway)),
        )
        document = build_document(inputs, started_at=self.started_at)
        document["db_pool"] = pool_stats(self.state)
        return document

    async def _scrape(
        self, http: httpx.AsyncClient, name: str, url: str, errors: list[str]
    ) -> tuple[str, Samples | None]:
        try:
            reply = await http.get(url)
            reply.raise_for_status()
            return name, Samples.from_families(text_string_to_metric_families(reply.text))
        except (httpx.HTTPError, ValueError) as exc:
            errors.append(f"{name} metrics: {type(exc).__name__}")
            return name, None

    async def _tenants(
        self, context: common_pb2.RequestContext, principal: auth_pb2.Principal, errors: list[str]
    ) -> list[dict[str, Any]]:
        """Each tenant's spend today against its daily budget. A tenant without a budget of its own
        spends against the global one, which the router reports for the caller's own tenant only."""
        listed = await guarded("auth tenants", as_(principal, self.state.clients.auth.list_tenants(context)), errors)
        if not listed:
            return []
        listed = list(listed)[:MAX_TENANTS]
        router = self.state.clients.router
        own, *reports = await asyncio.gather(
            guarded("router usage", as_(principal, router.get_usage(context, "", SOURCE_TIMEOUT_S)), errors),
            *(
                guarded(f"usage of {t.id}", as_(principal, router.get_usage(context, t.id, SOURCE_TIMEOUT_S)), errors)
                for t in listed
            ),
        )
        own_tenant = next((t for t in listed if t.id == principal.tenant_id), None)
        # The caller's own tenant without a budget of its own: the router answered the global budget.
        global_budget = own.budget_usd if own is not None and own_tenant and not own_tenant.daily_budget_usd else 0.0
        rows = []
        for tenant, report in zip(listed, reports, strict=True):
            budget = tenant.daily_budget_usd or global_budget
            cost = report.cost_usd if report is not None else None
            rows.append(
                {
                    "id": tenant.id,
                    "name": tenant.name,
                    "cost_usd": None if cost is None else round(cost, 6),
                    "budget_usd": budget,
                    "budget_source": "tenant" if tenant.daily_budget_usd else ("global" if budget else "none"),
                    "used": round(cost / budget, 6) if cost is not None and budget else None,
                    "requests": report.requests if report is not None else None,
                }
            )
        return rows


async def as_(principal: auth_pb2.Principal, call: Awaitable[T]) -> T:
    """``call`` with a freshly signed assertion of ``principal``: the variable is set in this task
    (``gather`` runs each call in a task of its own), so concurrent calls never share one."""
    outgoing_principal_var.set(sign_principal(principal))
    return await call


async def guarded(name: str, call: Awaitable[T], errors: list[str]) -> T | None:
    """``call``'s answer, or None with ``name`` and the reason added to ``errors``."""
    try:
        return await asyncio.wait_for(call, SOURCE_TIMEOUT_S * 2)
    except ApiError as exc:
        errors.append(f"{name}: {exc.status_code} {exc.error}")
    except (TimeoutError, OSError) as exc:
        errors.append(f"{name}: {type(exc).__name__}")
    return None
