"""Every gateway replica forgets a changed principal at once, not only the one that took the change.

A replica caches verified principals (caches.PrincipalCache) for ``GOBLIN_AUTH_CACHE_TTL_S``. When an
admin switches an account off, a key is revoked, a session ends or a tenant's limits change through
one replica, that replica forgets the principals naming it and publishes the ids on a Redis pub/sub
channel; every replica subscribes and forgets what its peers name.

On the wire: ids only (user, tenant, API key, session), never a credential or a digest of one. A
message can only make a replica forget: a forged or garbled one costs round trips to auth, never
grants anything (an unreadable one makes the replica forget everything, as it might name anyone).

Auth publishes the same message when it ends a session on its own (a sign-out with a refresh token
alone, a reused refresh token), so those reach every replica too. The format:
services/common/principal_changes.py.

A replica that cannot hear its peers (Redis away, the subscription silent for ``LIVENESS_S``) keeps
cached principals for ``caches.UNSUBSCRIBED_TTL_S`` at most, and forgets everything each time it
(re)subscribes, since it may have missed messages. Publishing never fails a request and holds it for
``PUBLISH_WAIT_S`` at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from services.common.principal_changes import CHANNEL, KINDS, decode, encode
from services.gateway.caches import PrincipalCache

log = logging.getLogger(__name__)

# The subscriber pings this often; silent for LIVENESS_S, its peers are no longer known to reach it.
PING_EVERY_S = 1.0
LIVENESS_S = 3.0
# A change's request waits this long at most for its publication; the publication goes on after it.
PUBLISH_WAIT_S = 0.5
RECONNECT_FIRST_S = 0.25
RECONNECT_MAX_S = 5.0
# Messages read in one go before the cache is scanned once for all of them.
BATCH = 256

INVALIDATIONS = Counter(
    "goblin_gateway_principal_invalidations_total",
    "Changes that made this gateway forget cached principals: made through it (local) or a peer (peer).",
    ["origin"],
)
INVALIDATION_ERRORS = Counter(
    "goblin_gateway_principal_invalidation_errors_total",
    "Invalidations not published (publish), subscriptions lost (subscribe), unreadable messages (malformed).",
    ["kind"],
)
RESUBSCRIBES = Counter(
    "goblin_gateway_principal_invalidation_resubscribes_total",
    "Times this gateway (re)subscribed to its peers' invalidations and so forgot every cached principal.",
)
SUBSCRIBED = Gauge(
    "goblin_gateway_principal_invalidation_subscribed",
    "1 while this gateway hears its peers' invalidations, else 0 (cached principals then live 1 s at most).",
)


class Invalidations:
    """Forgets changed principals in this replica's cache and its peers' (see the module's docstring)."""

    def __init__(self, cache: PrincipalCache, redis_url: str) -> None:
        self.cache = cache
        self.redis_url = redis_url
        self.replica = uuid.uuid4().hex
        self._publisher: aioredis.Redis | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        # Whether the current connection's subscription is confirmed: only then does hearing from
        # Redis make the cache trust its full TTL.
        self._subscribed = False

    async def start(self) -> None:
        """Start subscribing (in the background). Until it has, cached principals live briefly."""
        self.cache.distrust()
        SUBSCRIBED.set(0)
        # No retries of its own: a publication that fails is counted and logged, and the peers, which
        # lost the same Redis, fall back to short-lived principals.
        self._publisher = aioredis.from_url(
            self.redis_url, socket_connect_timeout=1, socket_timeout=1, retry_on_error=[], retry=None
        )
        self._subscriber = asyncio.create_task(self._subscribe_forever(), name="principal-invalidations")

    async def stop(self) -> None:
        """Stop subscribing; give pending publications their bounded wait; close the connections."""
        if self._subscriber is not None:
            self._subscriber.cancel()
            await asyncio.gather(self._subscriber, return_exceptions=True)
            self._subscriber = None
        if self._publishing:
            await asyncio.wait(self._publishing, timeout=PUBLISH_WAIT_S)
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None
        SUBSCRIBED.set(0)

    async def forget(
        self, *, user_id: str = "", tenant_id: str = "", api_key_id: str = "", session_id: str = ""
    ) -> None:
        """Forget the principals naming these ids here, at once, and on every peer: the message is
        published before this returns, unless Redis takes longer than ``PUBLISH_WAIT_S`` (it is then
        still sent in the background) or fails (counted and logged; never raised)."""
        self.cache.forget(user_id=user_id, tenant_id=tenant_id, api_key_id=api_key_id, session_id=session_id)
        INVALIDATIONS.labels("local").inc()
        if self._publisher is None:
            return
        ids = {"user_id": user_id, "tenant_id": tenant_id, "api_key_id": api_key_id, "session_id": session_id}
        task = asyncio.create_task(self._publish(encode(self.replica, ids)))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        await asyncio.wait({task}, timeout=PUBLISH_WAIT_S)

    async def _publish(self, message: bytes) -> None:
        assert self._publisher is not None
        try:
            await self._publisher.publish(CHANNEL, message)
        except Exception as exc:  # Redis away or slow: the peers lose their subscription too
            INVALIDATION_ERRORS.labels("publish").inc()
            log.warning("principal invalidation not published: %s", type(exc).__name__)

    async def _subscribe_forever(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            started = time.monotonic()
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                INVALIDATION_ERRORS.labels("subscribe").inc()
                log.warning("principal invalidations: subscription lost (%s); retrying in %.2fs", exc, delay)
            self._subscribed = False
            self.cache.distrust()
            SUBSCRIBED.set(0)
            if time.monotonic() - started > LIVENESS_S:
                delay = RECONNECT_FIRST_S  # it had been working: start the backoff again
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _listen(self) -> None:
        """Subscribe and apply messages until the connection fails or falls silent (raises)."""
        client = aioredis.from_url(
            self.redis_url, socket_connect_timeout=2, socket_timeout=LIVENESS_S, retry_on_error=[], retry=None
        )
        pubsub = client.pubsub()
        self._subscribed = False
        try:
            await pubsub.subscribe(CHANNEL)
            heard = pinged = time.monotonic()
            while True:
                now = time.monotonic()
                if now - pinged >= PING_EVERY_S:
                    await pubsub.ping()
                    pinged = now
                batch = [await pubsub.get_message(timeout=PING_EVERY_S)]
                while batch[-1] is not None and len(batch) < BATCH:
                    batch.append(await pubsub.get_message(timeout=0))
                messages = [m for m in batch if m is not None]
                if messages:
                    heard = time.monotonic()
                    self._apply(messages, heard)
                # Judged after reading, so a busy event loop that left a pong waiting is not a silence.
                elif time.monotonic() - heard > LIVENESS_S:
                    raise ConnectionError(f"no answer from redis for {LIVENESS_S:.0f}s")
        finally:
            await pubsub.aclose()
            await client.aclose()

    def _apply(self, messages: list[dict[str, Any]], heard: float) -> None:
        """Forget what ``messages`` name, in one scan of the cache; then trust the cache a while more."""
        ids: dict[str, set[str]] = {kind: set() for kind in KINDS}
        peers = 0
        for message in messages:
            if message["type"] == "subscribe":
                # Subscribed now (again, if redis-py reconnected under us): what was published while
                # this replica was not listening is lost, so it forgets everything it cached.
                self.cache.clear()
                self._subscribed = True
                RESUBSCRIBES.inc()
                SUBSCRIBED.set(1)
                log.info("principal invalidations: subscribed")
            elif message["type"] == "message":
                decoded = decode(message["data"])
                if decoded is None:
                    INVALIDATION_ERRORS.labels("malformed").inc()
                    log.warning("principal invalidations: unreadable message; forgetting every cached principal")
                    self.cache.clear()
                    continue
                replica, named = decoded
                if replica == self.replica:
                    continue  # this replica's own change, already applied
                peers += 1
                for kind, value in named.items():
                    ids[kind].add(value)
        if peers:
            self.cache.forget_all(
                user_ids=ids["user_id"],
                tenant_ids=ids["tenant_id"],
                api_key_ids=ids["api_key_id"],
                session_ids=ids["session_id"],
            )
            INVALIDATIONS.labels("peer").inc(peers)
        if self._subscribed:
            self.cache.trust_until(heard + LIVENESS_S)
