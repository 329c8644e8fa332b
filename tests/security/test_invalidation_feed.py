"""The gateway replicas' invalidation feed (services/gateway/invalidation.py) on a real Redis: a change
made through one replica empties the matching cache entries of the others; the wire carries ids only;
a forged or garbled message can only make a replica forget; a replica that lost Redis keeps cached
principals for a second at most and forgets everything when it subscribes again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from goblin.v1 import auth_pb2
from goblin_tools.embedded import EmbeddedRedis
from services.gateway import caches, invalidation
from services.gateway.caches import PrincipalCache
from services.gateway.invalidation import CHANNEL, Invalidations

CREDENTIAL = "gk-a-secret-api-key-value"
TOKEN = "eyJ.an-access-token.sig"


def principal(**fields: str) -> auth_pb2.Principal:
    base = {"user_id": "u-1", "tenant_id": "acme", "role": "user", "scopes": ["*"]}
    return auth_pb2.Principal(**{**base, **fields})


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    yield server
    server.stop()


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (a hang guard, not a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(redis_server: EmbeddedRedis) -> AsyncIterator[Callable[[], Awaitable[Invalidations]]]:
    started: list[Invalidations] = []

    async def replica() -> Invalidations:
        feed = Invalidations(PrincipalCache(ttl_s=30), redis_server.url)
        await feed.start()
        started.append(feed)
        await eventually(lambda: feed._subscribed)
        return feed

    yield replica
    for feed in started:
        await feed.stop()


def fill(cache: PrincipalCache) -> None:
    """Two credentials of u-1 (a key and a session) and one of another user, all cached."""
    cache.put(CREDENTIAL, principal(api_key_id="k-1"))
    cache.put(TOKEN, principal(session_id="s-1"))
    cache.put("other", principal(user_id="u-2", tenant_id="beta", api_key_id="k-2"))
    assert all(cache.get(c) is not None for c in (CREDENTIAL, TOKEN, "other"))


@pytest.mark.parametrize(
    "change, gone",
    [
        ({"user_id": "u-1"}, {CREDENTIAL, TOKEN}),
        ({"api_key_id": "k-1"}, {CREDENTIAL}),
        ({"session_id": "s-1"}, {TOKEN}),
        ({"tenant_id": "beta"}, {"other"}),
    ],
)
async def test_a_change_through_one_replica_empties_the_others(
    replicas: Callable[[], Awaitable[Invalidations]], change: dict[str, str], gone: set[str]
) -> None:
    a, b = await replicas(), await replicas()
    fill(a.cache)
    fill(b.cache)
    await a.forget(**change)
    for cache in (a.cache, b.cache):
        await eventually(lambda c=cache: all(c.get(x) is None for x in gone))
        kept = {CREDENTIAL, TOKEN, "other"} - gone
        assert all(cache.get(x) is not None for x in kept), "a change forgets only what it names"


async def test_the_wire_carries_ids_never_a_credential(
    replicas: Callable[[], Awaitable[Invalidations]], redis_server: EmbeddedRedis
) -> None:
    a = await replicas()
    fill(a.cache)
    listener = aioredis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        await a.forget(user_id="u-1", api_key_id="k-1", session_id="s-1", tenant_id="acme")
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        body = json.loads(message["data"])
        assert set(body) == {"v", "replica", "user_id", "tenant_id", "api_key_id", "session_id"}
        raw = message["data"].decode()
        for secret in (CREDENTIAL, TOKEN, PrincipalCache.key(CREDENTIAL).hex(), PrincipalCache.key(TOKEN).hex()):
            assert secret not in raw
    finally:
        await pubsub.aclose()
        await listener.aclose()


FORGED = [
    b"not json",
    b"{}",
    b"[]",
    json.dumps({"v": 2, "replica": "x", "user_id": "u-1"}).encode(),
    json.dumps({"v": 1, "replica": "x"}).encode(),
    json.dumps({"v": 1, "replica": "x", "user_id": ["u-1"]}).encode(),
    json.dumps({"v": 1, "replica": "x", "user_id": "u 1\n"}).encode(),
    json.dumps({"v": 1, "replica": "x", "user_id": "u" * 10_000}).encode(),
    # A "grant": principal fields a forger would like a replica to adopt. There is no such message.
    json.dumps({"v": 1, "replica": "x", "user_id": "u-9", "role": "admin", "scopes": ["*"], "active": True}).encode(),
    json.dumps({"v": 1, "replica": "x", "credential": CREDENTIAL, "principal": {"role": "admin"}}).encode(),
]


async def test_a_forged_message_can_only_make_a_replica_forget(
    replicas: Callable[[], Awaitable[Invalidations]], redis_server: EmbeddedRedis
) -> None:
    b = await replicas()
    publisher = redis.Redis.from_url(redis_server.url)
    for forged in FORGED:
        fill(b.cache)
        before = {c: b.cache.get(c) for c in (CREDENTIAL, TOKEN, "other", "unknown")}
        b.cache.put("marker", principal(user_id="u-marker"))
        publisher.publish(CHANNEL, forged)
        # A marker in a real peer's format: once it is applied, the forged message before it was too.
        publisher.publish(CHANNEL, json.dumps({"v": 1, "replica": "marker", "user_id": "u-marker"}))
        await eventually(lambda: b.cache.get("marker") is None)
        for credential, was in before.items():
            now = b.cache.get(credential)
            assert now is None or now == was, f"{forged!r} changed a cached principal"
        assert b.cache.get("unknown") is None, f"{forged!r} granted a principal"
    publisher.close()


async def test_an_unreadable_message_forgets_everything(
    replicas: Callable[[], Awaitable[Invalidations]], redis_server: EmbeddedRedis
) -> None:
    """It might have named anyone: a replica that cannot read a peer's change takes the safe side."""
    b = await replicas()
    fill(b.cache)
    with redis.Redis.from_url(redis_server.url) as publisher:
        publisher.publish(CHANNEL, b"\xff garbage")
    await eventually(lambda: all(b.cache.get(c) is None for c in (CREDENTIAL, TOKEN, "other")))


async def test_an_answer_in_flight_during_a_change_is_not_cached_after_it() -> None:
    """Auth answered before the account was switched off; the answer lands after the forget."""
    cache = PrincipalCache(ttl_s=30)
    assert cache.get(CREDENTIAL) is None  # the miss that sends the request to auth
    cache.forget(user_id="u-1")  # the change, through this replica or a peer, while auth answers
    cache.put(CREDENTIAL, principal(api_key_id="k-1"))  # the answer, from before the change
    assert cache.get(CREDENTIAL) is None, "an answer from before a change was kept after it"
    # The next request asks auth again, and that answer (after the change) is kept.
    cache.put(CREDENTIAL, principal(api_key_id="k-1"))
    assert cache.get(CREDENTIAL) is not None
    # A resync (clear) holds back answers in flight the same way.
    assert cache.get("other") is None
    cache.clear()
    cache.put("other", principal(user_id="u-2"))
    assert cache.get("other") is None


async def test_redis_away_means_short_lived_principals_then_a_full_resync(
    replicas: Callable[[], Awaitable[Invalidations]],
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = await replicas()
    fill(b.cache)
    data_dir = redis_server.data_dir
    redis_server.stop()
    # Lost: at once on a closed connection, within LIVENESS_S on a silent one.
    await eventually(lambda: not b._subscribed)
    await eventually(lambda: b.cache.get(CREDENTIAL) is None, timeout_s=invalidation.LIVENESS_S + 5)
    # What is put while unsubscribed lives UNSUBSCRIBED_TTL_S at most.
    b.cache.put(TOKEN, principal(session_id="s-1"))
    assert b.cache.get(TOKEN) is not None
    await eventually(lambda: b.cache.get(TOKEN) is None, timeout_s=caches.UNSUBSCRIBED_TTL_S + 5)
    # Publishing with Redis away neither raises nor hangs the request.
    await asyncio.wait_for(b.forget(user_id="u-1"), timeout=10)

    again = EmbeddedRedis(data_dir)
    try:
        b.cache.put("other", principal(user_id="u-2"))
        await eventually(lambda: b._subscribed, timeout_s=invalidation.RECONNECT_MAX_S + 10)
        assert b.cache.get("other") is None, "a resubscribed replica forgets what it may have missed"
    finally:
        again.stop()


async def test_a_silent_redis_is_a_lost_subscription(
    replicas: Callable[[], Awaitable[Invalidations]], redis_server: EmbeddedRedis
) -> None:
    """A connection that stays open but answers nothing (a frozen server, a dropped network path)
    cannot be told from one with nothing to say, except by the pings going unanswered."""
    b = await replicas()
    fill(b.cache)
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: not b._subscribed, timeout_s=invalidation.LIVENESS_S + 10)
        await eventually(lambda: b.cache.get(CREDENTIAL) is None, timeout_s=caches.UNSUBSCRIBED_TTL_S + 5)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    await eventually(lambda: b._subscribed, timeout_s=invalidation.RECONNECT_MAX_S + 10)


async def test_a_lone_cache_keeps_its_ttl() -> None:
    """Without a feed (one process, no peers), a cache keeps principals for its full TTL, as before."""
    cache = PrincipalCache(ttl_s=30)
    cache.put(CREDENTIAL, principal())
    cache._entries[PrincipalCache.key(CREDENTIAL)] = (principal(), time.monotonic() - 10)
    assert cache.get(CREDENTIAL) is not None
    cache.distrust()
    assert cache.get(CREDENTIAL) is None


async def test_forgetting_goes_through_an_id_index_that_stays_bounded() -> None:
    """Every sign-out on any replica forgets on every replica: it must cost what it forgets, not a
    scan of the cache, and the index must not grow with entries that lapsed or were evicted."""
    cache = PrincipalCache(ttl_s=30, maxsize=10)
    for i in range(200):
        cache.put(f"c{i}", principal(user_id=f"u{i}", api_key_id=f"k{i}"))
    assert cache._indexed <= caches.INDEX_SLACK * 10 + 3
    assert sum(len(keys) for keys in cache._index.values()) == cache._indexed
    assert cache.get("c199") is not None and cache.get("c0") is None
    assert cache.forget(api_key_id="k199") == 1 and cache.get("c199") is None
    assert cache.forget(api_key_id="k0") == 0, "an evicted entry is not counted as forgotten"
    assert cache.forget(tenant_id="acme") == 9
    assert all(cache.get(f"c{i}") is None for i in range(200))
