"""Connections to the stores a service depends on, with the start/healthy/stop shape of a Service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from services.common import db
from services.common.errors import Unavailable

log = logging.getLogger(__name__)


# A store this service depends on is away (down, restarting, unreachable): retry later, not a bug.
# OSError covers refused and reset connections and a Unix socket whose server is gone (FileNotFoundError).
STORE_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class PostgresStore:
    """An asyncpg pool on the service's own schema, opened after that schema is migrated.

    ``schema`` names the service's :data:`~services.common.db.SETS` entry: the pool's ``search_path``
    is that schema alone, and ``start`` applies its pending migrations and the audit trail's (which the
    service may append to). Without a schema (the gateway) the pool migrates nothing and writes only
    schema-qualified rows.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, max_size: int = 10, run_migrations: bool = True) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_size = max_size
        self.run_migrations = run_migrations and schema is not None
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("database not connected yet")
        return self._pool

    async def start(self) -> None:
        if self.run_migrations:
            assert self.schema is not None
            await db.migrate(self.dsn, db.SETS[self.schema])
            await db.migrate(self.dsn, db.AUDIT)
        self._pool = await db.create_pool(self.dsn, schema=self.schema, max_size=self.max_size)

    async def healthy(self) -> bool:
        return self._pool is not None and await db.ping(self._pool)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class RedisStore:
    """A redis.asyncio client (TCP ``redis://``, TLS ``rediss://`` or ``unix://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise Unavailable("redis not connected yet")
        return self._client

    async def start(self) -> None:
        client = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        try:
            await client.ping()
        except Exception:
            await client.aclose()
            raise
        self._client = client

    async def healthy(self) -> bool:
        return self._client is not None and bool(await self._client.ping())

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def start_with_backoff(
    start: Callable[[], Awaitable[None]],
    what: str,
    *,
    stopping: asyncio.Event | None = None,
    first_delay_s: float = 0.25,
    max_delay_s: float = 10.0,
) -> bool:
    """Call ``start`` until it succeeds, waiting twice as long after each failure (up to the cap).

    False when ``stopping`` was set first; without one, only cancelling the caller ends the attempts.
    """
    stop = stopping or asyncio.Event()
    delay = first_delay_s
    while not stop.is_set():
        try:
            await start()
            return True
        except Exception as exc:
            log.warning("%s not ready: %s; retrying in %.1fs", what, exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, max_delay_s)
    return False


class Store(Protocol):
    async def start(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def stop(self) -> None: ...


class StoreBackedService:
    """The start/healthy/stop part of a :class:`~services.common.grpc_server.Service` for services
    whose readiness is their stores' readiness. Subclasses set ``name``, ``grpc_service_names``,
    ``stores`` and implement ``register``."""

    name: str
    grpc_service_names: list[str]
    stores: list[Store]

    async def start(self) -> None:
        for store in self.stores:
            await store.start()

    async def healthy(self) -> bool:
        for store in self.stores:
            if not await store.healthy():
                return False
        return True

    async def stop(self) -> None:
        for store in reversed(self.stores):
            await store.stop()
