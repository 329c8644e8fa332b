"""The one-round-trip limiter (services.gateway.ratelimit.HIT_ALL) against the ``limits`` library's
moving window it replaced, on a real Redis: the same decisions, the same keys, the same expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest
from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from services.gateway import redis_script
from services.gateway.ratelimit import (
    KEY_PREFIX,
    USER_NAMESPACE,
    Charged,
    Client,
    Decision,
    RateLimiter,
    RateLimiterUnavailable,
    RouteClass,
    parse_limits,
)


@dataclass(frozen=True)
class Outcome:
    """What a hit told the client: refused or not, and the numbers of its headers."""

    refused: bool
    limit: int
    remaining: int
    description: str


class LimitsReference:
    """The limiter as it was: one ``limits`` moving-window hit per window, then its stats."""

    def __init__(self, redis_url: str, limiter: RateLimiter) -> None:
        uri = redis_url.replace("unix://", "redis+unix://", 1) if redis_url.startswith("unix://") else redis_url
        self.storage = RedisStorage(f"async+{uri}", implementation="redispy", key_prefix=KEY_PREFIX)
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.limiter = limiter

    async def hit(self, route_class: RouteClass, client: Client) -> Outcome:
        windows: list[tuple[RateLimitItem, str, str]] = [
            (item, route_class.value, client.key) for item in self.limiter.limits[route_class]
        ]
        if client.user is not None:
            windows += [(item, USER_NAMESPACE, client.user) for item in self.limiter.user_limits]
        for item, namespace, key in windows:
            if not await self.strategy.hit(item, namespace, key):
                stats = await self.strategy.get_window_stats(item, namespace, key)
                return Outcome(True, item.amount, max(0, stats.remaining), str(item))
        tightest = None
        for item, namespace, key in windows:
            stats = await self.strategy.get_window_stats(item, namespace, key)
            outcome = Outcome(False, item.amount, max(0, stats.remaining), str(item))
            if tightest is None or outcome.remaining < tightest.remaining:
                tightest = outcome
        assert tightest is not None
        return tightest


async def outcome_of(limiter: RateLimiter, route_class: RouteClass, client: Client) -> Outcome:
    result = await limiter.hit(route_class, client)
    if isinstance(result, Decision):
        assert result.retry_after >= 1
        return Outcome(True, result.limit, result.remaining, result.description)
    assert isinstance(result, Charged)
    decision = await result.decision()
    assert decision is not None and decision.retry_after == 0
    return Outcome(False, decision.limit, decision.remaining, decision.description)


def new_limiter(redis_url: str, *, fail_open: bool = True) -> RateLimiter:
    return RateLimiter(
        redis_url,
        {RouteClass.chat: parse_limits("4/minute;6/hour"), RouteClass.default: parse_limits("3/minute")},
        burst=parse_limits("5/minute"),
        user=parse_limits("7/minute"),
        fail_open=fail_open,
    )


@pytest.fixture(params=["script connection", "redis-py"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the limiter reaches Redis: its own pipelined connection, and redis-py for other URLs."""
    if request.param == "redis-py":
        monkeypatch.setattr(redis_script, "supports", lambda url: False)
    return str(request.param)


async def test_same_decisions_as_the_limits_library(redis_url: str, engine: str) -> None:
    limiter = new_limiter(redis_url)
    assert (limiter.redis is None) == (engine == "script connection")
    reference = LimitsReference(redis_url, limiter)
    run = uuid.uuid4().hex
    # Two credentials of one user: the class windows are per credential, the user's ceiling spans both;
    # the user's ceiling refuses once the class windows of both keys still have room, after it charged them.
    schedule = [
        (RouteClass.chat, "a"), (RouteClass.chat, "a"), (RouteClass.default, "a"), (RouteClass.chat, "b"),
        (RouteClass.chat, "a"), (RouteClass.chat, "a"), (RouteClass.chat, "a"), (RouteClass.default, "b"),
        (RouteClass.chat, "b"), (RouteClass.chat, "b"), (RouteClass.default, "a"), (RouteClass.chat, "b"),
    ]  # fmt: skip
    refusals = 0
    for route_class, key in schedule:
        old = await reference.hit(route_class, Client(f"key:old-{run}-{key}", user=f"user:old-{run}"))
        new = await outcome_of(limiter, route_class, Client(f"key:new-{run}-{key}", user=f"user:new-{run}"))
        assert new == old, (route_class, key)
        refusals += new.refused
    assert refusals >= 3
    # What is left in Redis is the same too: each window's entries, and its expiry.
    redis = Redis.from_url(redis_url)
    try:
        old_keys = sorted(k.decode() for k in await redis.keys(f"{KEY_PREFIX}:*old-{run}*"))
        new_keys = sorted(k.decode() for k in await redis.keys(f"{KEY_PREFIX}:*new-{run}*"))
        # chat: 3 windows (two of its own, the burst) x 2 keys; default: 2 x 2; the user's: 1.
        assert len(old_keys) == 11 and [k.replace("old-", "new-") for k in old_keys] == new_keys
        for old_key in old_keys:
            new_key = old_key.replace(f"old-{run}", f"new-{run}")
            assert await redis.llen(new_key) == await redis.llen(old_key), new_key
            assert abs(await redis.ttl(new_key) - await redis.ttl(old_key)) <= 1, new_key
    finally:
        await redis.aclose()
        await limiter.close()


async def test_the_keys_are_the_limits_librarys(redis_url: str, engine: str) -> None:
    """A window carries over across the change: the key ``limits`` wrote is the one charged now."""
    limiter = new_limiter(redis_url)
    reference = LimitsReference(redis_url, limiter)
    client = Client(f"ip:{uuid.uuid4().hex}")
    for _ in range(2):
        await reference.hit(RouteClass.default, client)
    assert await outcome_of(limiter, RouteClass.default, client) == Outcome(False, 3, 0, "3 per 1 minute")
    assert (await outcome_of(limiter, RouteClass.default, client)).refused
    assert (await reference.hit(RouteClass.default, client)).refused
    await limiter.close()


async def test_refusal_numbers_and_the_window_moving_on(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {RouteClass.chat: parse_limits("2/second")})
    client = Client(f"ip:{uuid.uuid4().hex}")
    for remaining in (1, 0):
        assert (await outcome_of(limiter, RouteClass.chat, client)).remaining == remaining
    refused = await limiter.hit(RouteClass.chat, client)
    assert isinstance(refused, Decision) and refused.remaining == 0 and 1 <= refused.retry_after <= 2
    assert refused.reset_at <= int(time.time()) + 2
    await asyncio.sleep(1.1)
    assert not (await outcome_of(limiter, RouteClass.chat, client)).refused
    await limiter.close()


async def test_redis_down_fails_open_or_closed(engine: str) -> None:
    nowhere = "redis://127.0.0.1:1"
    client = Client("ip:10.0.0.1")
    opened = new_limiter(nowhere, fail_open=True)
    assert await opened.hit(RouteClass.chat, client) is None
    closed = new_limiter(nowhere, fail_open=False)
    with pytest.raises(RateLimiterUnavailable):
        await closed.hit(RouteClass.chat, client)
    await opened.close()
    await closed.close()


async def test_the_script_connection_pipelines_reloads_and_reconnects(redis_url: str) -> None:
    script = redis_script.RedisScript(redis_url, "return {KEYS[1], ARGV[1]}")
    # Calls made at once share the connection; each gets its own answer.
    answers = await asyncio.gather(*(script([f"k{i}"], [i]) for i in range(50)))
    assert answers == [[f"k{i}".encode(), str(i).encode()] for i in range(50)]
    redis = Redis.from_url(redis_url)
    try:
        await redis.script_flush()  # Redis forgot the script: loaded again on the next call
        assert await script(["k"], [1.5]) == [b"k", b"1.5"]
        await redis.client_kill_filter(skipme=True, _type="normal")  # the connection is cut
        await asyncio.sleep(0.1)
        assert await script(["k"], ["again"]) == [b"k", b"again"]
        with pytest.raises(redis_script.ScriptError):
            await redis_script.RedisScript(redis_url, "return redis.error_reply('no')")([], [])
    finally:
        await redis.aclose()
        await script.close()


def test_urls_the_script_connection_takes() -> None:
    assert redis_script.supports("redis://:secret@10.0.0.5:6380/2")
    assert redis_script.supports("rediss://cache.internal:6379")
    assert redis_script.supports("unix:///run/redis.sock?db=1")
    assert not redis_script.supports("redis://10.0.0.5:6379/0?socket_keepalive=true")
    assert not redis_script.supports("redis+sentinel://host:26379/mymaster")
    script = redis_script.RedisScript("redis://user:p%40ss@10.0.0.5:6380/2", "return 1")
    assert script._handshake() == [
        b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\np@ss\r\n",
        b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n",
    ]
