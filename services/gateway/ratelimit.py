"""Rate limits shared by every gateway replica: moving windows in Redis, in the ``limits`` notation and
with its keys and semantics, all of a request's windows in one round trip (one Lua script).

Each request is charged to its client in one of five route classes, each with its own limits in the
``limits`` notation (``10/minute``, ``5/second;100/minute``) plus an optional burst limit for all.
The client is a *verified* identity or nothing: a credential counts only once this gateway has
verified it (its principal is in the gateway's principal cache, a local lookup, no round trip);
then the request is charged to the credential and, across all of the user's credentials and every
class, to the user's ceiling (``GOBLIN_RATE_LIMIT_USER``). Anything else (no credential, a made-up
one, one not verified yet) is charged to the client's IP, so random bearer strings share one window.
If Redis fails, the configured behaviour applies (fail open: allow and count; fail closed: 503),
never a 500.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from limits import RateLimitItem, parse_many
from prometheus_client import Counter
from redis.asyncio import Redis

from goblin.v1 import auth_pb2
from services.common.context import hash_user_id
from services.gateway import redis_script

log = logging.getLogger(__name__)

STORAGE_ERRORS = Counter(
    "goblin_rate_limit_storage_errors_total", "Rate-limit checks that could not reach Redis.", ["behaviour"]
)


class RouteClass(StrEnum):
    auth = "auth"
    # Verifiers fetch the public keys often and at once (every replica of a relying service): a
    # class of its own, so they neither starve login nor are starved by it.
    jwks = "jwks"
    chat = "chat"
    health = "health"
    default = "default"


USER_NAMESPACE = "user"
# Where the resolved client address is kept on the request (scope["state"]) for the routes.
CLIENT_IP_STATE = "client_ip"
CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/completions",
    "/invoke",
    "/v1/embeddings",
    "/api/query",
)


def classify(path: str) -> RouteClass:
    if path.startswith("/.well-known/"):
        return RouteClass.jwks
    if path.startswith("/auth/"):
        return RouteClass.auth
    if path in CHAT_PATHS or path.startswith("/v1/collections/") and path.endswith("/query"):
        return RouteClass.chat
    if path.startswith(("/health", "/api/health")) or path == "/metrics":
        return RouteClass.health
    return RouteClass.default


def parse_limits(text: str) -> list[RateLimitItem]:
    """``5/second;100/minute`` -> items; raises ValueError with the offending text."""
    try:
        items = parse_many(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not in the limits notation (e.g. '10/minute'): {exc}") from None
    if not items:
        raise ValueError(f"{text!r} names no limit")
    return list(items)


@dataclass(frozen=True)
class Decision:
    """One window's numbers for a request: refused, as :meth:`RateLimiter.hit` returns it, or allowed,
    as :meth:`Charged.decision` does."""

    limit: int
    remaining: int
    reset_at: int  # unix seconds when the tightest window frees a place
    retry_after: int  # seconds; 0 when allowed
    description: str  # e.g. "10 per 1 minute"


class TrustedProxies:
    """Which peers may tell us the client's address in X-Forwarded-For."""

    def __init__(self, cidrs: list[str]) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The peer, unless it is a trusted proxy: then the right-most untrusted X-Forwarded-For entry."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if not self.trusts(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage in the header: fall back to what we saw
        return peer


@dataclass(frozen=True)
class Client:
    """Whom a request is charged to: ``key`` in its route class and, for a verified user, ``user``
    against the per-user ceiling as well."""

    key: str
    user: str | None = None


def client_for(
    route_class: RouteClass, principal: auth_pb2.Principal | None, credential: str | None, ip: str
) -> Client:
    """The verified credential (by its API key id, else its hash: the credential itself is never
    stored in Redis) and its user (hashed), if ``principal`` verified it; else the IP.

    Auth routes are always charged to the IP: a password-guessing client must not get a fresh window
    by sending a credential, real or made up, with each attempt.
    """
    if principal is None or not credential or route_class is RouteClass.auth:
        return Client(f"ip:{ip}")
    key = principal.api_key_id or hashlib.sha256(credential.encode()).hexdigest()[:32]
    # Redis holds the user as the telemetry hash, like every other store outside auth.
    return Client(f"key:{key}", user=f"user:{hash_user_id(principal.user_id)}" if principal.user_id else None)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, or None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


class Charged:
    """An allowed request and the numbers of its tightest window, for its X-RateLimit-* headers (None
    when there are none to tell)."""

    __slots__ = ("_decision",)

    def __init__(self, decision: Decision | None) -> None:
        self._decision = decision

    async def decision(self) -> Decision | None:
        """The tightest window's numbers, or None (the request stays allowed)."""
        return self._decision

    def cancel(self) -> None:
        """Nothing to stop: the numbers came back with the charge (kept for the middleware's contract)."""
        return None


# Every window of a request in one round trip, with the semantics and keys of ``limits``' moving window
# (its acquire_moving_window.lua and moving_window.lua, which this script runs in turn per window):
# each window in order is charged one entry (a list of timestamps, newest first, trimmed to the limit,
# expiring after the window); the first that is full refuses the request and the windows before it keep
# their charge, as the calls one after another did. The answer is the refused window's index (0 when
# all were charged), then each window's oldest entry inside it and its count: of the refused window
# alone, else of every window. Timestamps go back as strings: Redis truncates Lua numbers to integers.
HIT_ALL = """
local now = tonumber(ARGV[1])
local function window(key, limit, expiry)
    local target = now - expiry
    local low, high, found = 0, limit - 1, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local value = tonumber(redis.call('lindex', key, mid))
        if value and value >= target then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        return {tostring(redis.call('lindex', key, found)), found + 1}
    end
    return {tostring(now), 0}
end
for i = 1, #KEYS do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local entry = redis.call('lindex', KEYS[i], limit - 1)
    if limit < 1 or (entry and tonumber(entry) >= now - expiry) then
        local stats = window(KEYS[i], limit, expiry)
        return {i, stats[1], stats[2]}
    end
    redis.call('lpush', KEYS[i], ARGV[1])
    redis.call('ltrim', KEYS[i], 0, limit - 1)
    redis.call('expire', KEYS[i], expiry)
end
local answer = {0}
for i = 1, #KEYS do
    local stats = window(KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
    answer[#answer + 1] = stats[1]
    answer[#answer + 1] = stats[2]
end
return answer
"""
# The prefix ``limits``' Redis storage put before every key: windows carry over across the change.
KEY_PREFIX = "goblin-rl"


@dataclass(frozen=True, slots=True)
class Window:
    """One moving window a request is charged to: the limit, and its key in Redis."""

    item: RateLimitItem
    key: str

    @classmethod
    def of(cls, item: RateLimitItem, namespace: str, client: str) -> Window:
        return cls(item, f"{KEY_PREFIX}:{item.key_for(namespace, client)}")


class RateLimiter:
    """Moving-window limits in Redis: a request's windows (its class's, and its user's ceiling) are
    charged and read in one round trip (:data:`HIT_ALL`)."""

    def __init__(
        self,
        redis_url: str,
        limits: dict[RouteClass, list[RateLimitItem]],
        *,
        burst: list[RateLimitItem] | None = None,
        user: list[RateLimitItem] | None = None,
        fail_open: bool = True,
    ) -> None:
        self.redis: Redis | None = None
        if redis_script.supports(redis_url):
            # The hot path: one pipelined connection, hiredis' parser, a sixth of redis-py's CPU per call.
            self._hit_all: Callable[..., Awaitable[Any]] = redis_script.RedisScript(redis_url, HIT_ALL, timeout_s=1)
        else:
            self.redis = Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            self._hit_all = self.redis.register_script(HIT_ALL)
        self.limits = {cls: [*items, *(burst or [])] for cls, items in limits.items()}
        self.user_limits = user or []
        self.fail_open = fail_open

    def windows(self, route_class: RouteClass, client: Client) -> list[Window]:
        """The windows one request of ``client`` in ``route_class`` is charged to, in charging order."""
        windows = [Window.of(item, route_class.value, client.key) for item in self.limits[route_class]]
        if client.user is not None:
            # One namespace for the user's ceiling: it spans every class and every credential.
            windows += [Window.of(item, USER_NAMESPACE, client.user) for item in self.user_limits]
        return windows

    async def hit(self, route_class: RouteClass, client: Client) -> Decision | Charged | None:
        """Charge one request: a refused :class:`Decision`, or :class:`Charged` if allowed. None means
        Redis failed and we fail open (allowed, no headers); failing closed raises RateLimiterUnavailable."""
        windows = self.windows(route_class, client)
        if not windows:
            return Charged(None)
        args: list[float | int] = [time.time()]
        for window in windows:
            args += (window.item.amount, window.item.get_expiry())
        try:
            answer = await self._hit_all(keys=[w.key for w in windows], args=args)
        except Exception as exc:  # a connection, timeout or script failure: Redis is not answering
            return self._storage_failed(exc)
        refused = int(answer[0])
        if refused:
            return _decision(windows[refused - 1].item, float(answer[1]), int(answer[2]), allowed=False)
        decisions = [
            _decision(w.item, float(answer[1 + 2 * i]), int(answer[2 + 2 * i]), allowed=True)
            for i, w in enumerate(windows)
        ]
        return Charged(min(decisions, key=lambda d: d.remaining))

    def _storage_failed(self, exc: Exception) -> None:
        behaviour = "open" if self.fail_open else "closed"
        STORAGE_ERRORS.labels(behaviour).inc()
        log.warning("rate limiter storage failed; failing %s: %s", behaviour, exc)
        if self.fail_open:
            return None
        raise RateLimiterUnavailable(str(exc)) from exc

    async def close(self) -> None:
        """Let go of the Redis connections."""
        if self.redis is not None:
            await self.redis.aclose()
        elif isinstance(self._hit_all, redis_script.RedisScript):
            await self._hit_all.close()


def _decision(item: RateLimitItem, oldest: float, count: int, *, allowed: bool) -> Decision:
    """A window's numbers from its oldest entry inside it and its count (``limits``' WindowStats)."""
    reset_at = math.ceil(oldest + item.get_expiry())
    return Decision(
        limit=item.amount,
        remaining=max(0, item.amount - count),
        reset_at=reset_at,
        retry_after=max(1, reset_at - int(time.time())) if not allowed else 0,
        description=str(item),
    )


class RateLimiterUnavailable(Exception):
    pass
