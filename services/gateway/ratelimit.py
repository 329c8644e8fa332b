"""Rate limits shared by every gateway replica: moving windows in Redis, via the ``limits`` library.

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

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from goblin.v1 import auth_pb2
from services.common.context import hash_user_id

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
    """An allowed request. Its X-RateLimit-* numbers are read from Redis while the request runs, so the
    read is off the request's critical path; :meth:`decision` waits for them when the answer starts."""

    def __init__(self, reading: asyncio.Future[Decision | None]) -> None:
        self._reading = reading

    async def decision(self) -> Decision | None:
        """The tightest window's numbers, or None if they could not be read (the request stays allowed)."""
        return await self._reading

    def cancel(self) -> None:
        self._reading.cancel()


class RateLimiter:
    def __init__(
        self,
        redis_url: str,
        limits: dict[RouteClass, list[RateLimitItem]],
        *,
        burst: list[RateLimitItem] | None = None,
        user: list[RateLimitItem] | None = None,
        fail_open: bool = True,
    ) -> None:
        uri = redis_url.replace("unix://", "redis+unix://", 1) if redis_url.startswith("unix://") else redis_url
        self.storage = RedisStorage(
            f"async+{uri}", implementation="redispy", wrap_exceptions=True, key_prefix="goblin-rl",
            socket_timeout=1, socket_connect_timeout=1,
        )  # fmt: skip
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.limits = {cls: [*items, *(burst or [])] for cls, items in limits.items()}
        self.user_limits = user or []
        self.fail_open = fail_open

    async def hit(self, route_class: RouteClass, client: Client) -> Decision | Charged | None:
        """Charge one request: a refused :class:`Decision`, or :class:`Charged` if allowed. None means
        Redis failed and we fail open (allowed, no headers); failing closed raises RateLimiterUnavailable."""
        windows = [(item, route_class.value, client.key) for item in self.limits[route_class]]
        if client.user is not None:
            # One namespace for the user's ceiling: it spans every class and every credential.
            windows += [(item, USER_NAMESPACE, client.user) for item in self.user_limits]
        try:
            for item, namespace, key in windows:
                if not await self.strategy.hit(item, namespace, key):
                    return await self._decision(item, namespace, key, allowed=False)
        except Exception as exc:  # limits wraps every storage failure; anything else is one too
            return self._storage_failed(exc)
        return Charged(asyncio.ensure_future(self._tightest(windows)))

    async def _decision(self, item: RateLimitItem, namespace: str, key: str, *, allowed: bool) -> Decision:
        stats = await self.strategy.get_window_stats(item, namespace, key)
        reset_at = math.ceil(stats.reset_time)
        return Decision(
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_at=reset_at,
            retry_after=max(1, reset_at - int(time.time())) if not allowed else 0,
            description=str(item),
        )

    async def _tightest(self, windows: list[tuple[RateLimitItem, str, str]]) -> Decision | None:
        try:
            decisions = [await self._decision(item, namespace, key, allowed=True) for item, namespace, key in windows]
        except Exception as exc:
            STORAGE_ERRORS.labels("open").inc()
            log.warning("rate limit headers could not be read: %s", exc)
            return None
        return min(decisions, key=lambda d: d.remaining)

    def _storage_failed(self, exc: Exception) -> None:
        behaviour = "open" if self.fail_open else "closed"
        STORAGE_ERRORS.labels(behaviour).inc()
        log.warning("rate limiter storage failed; failing %s: %s", behaviour, exc)
        if self.fail_open:
            return None
        raise RateLimiterUnavailable(str(exc)) from exc

    async def close(self) -> None:
        # The redis-py bridge keeps a connection pool on the storage; let it go with the process.
        return None


class RateLimiterUnavailable(Exception):
    pass
