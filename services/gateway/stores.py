"""The gateway's own stores: Postgres for the audit trail, Redis (also used by the rate limiter)."""

from __future__ import annotations

import asyncio
import time

from services.common.audit import AuditLog
from services.common.journal import service_journal
from services.common.stores import PostgresStore, RedisStore, start_with_backoff
from services.gateway.clients.health import ServiceHealth, record_health
from services.gateway.config import GatewaySettings


class GatewayStores:
    """They connect in the background with retries, so the gateway serves health while they come up;
    readiness reports them. Audit rows queue (bounded) until Postgres answers.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.postgres = PostgresStore(settings.database_url.get_secret_value(), max_size=4, run_migrations=False)
        self.redis = RedisStore(settings.redis_url.get_secret_value())
        self.audit = AuditLog(self.postgres, journal=service_journal(settings.goblin_home, "gateway", "audit_events"))
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start connecting (in the background: this returns at once)."""
        self._connecting = asyncio.create_task(self._connect(), name="gateway-stores")

    async def _connect(self) -> None:
        for name, store in (("gateway postgres", self.postgres), ("gateway redis", self.redis)):
            await start_with_backoff(store.start, name, max_delay_s=5.0)
        await self.audit.start()

    async def check(self) -> list[ServiceHealth]:
        """Postgres and Redis health, as readiness reports them."""
        results = []
        for name, store in (("postgres", self.postgres), ("redis", self.redis)):
            started = time.perf_counter()
            try:
                ok, error = await asyncio.wait_for(store.healthy(), timeout=1.0), ""
            except Exception as exc:
                ok, error = False, type(exc).__name__
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            record_health(name, ok)
            results.append(ServiceHealth(name, "gateway", "SERVING" if ok else "NOT_SERVING", latency_ms, error))
        return results

    async def stop(self) -> None:
        """Stop connecting, flush the audit queue, close both stores."""
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        await self.audit.stop()
        await self.redis.stop()
        await self.postgres.stop()
