"""Auth: what verifying a credential costs a request at the gateway (cached and uncached), and password
sign-in latency under a steady 20 logins/s (goal: p95 under 500 ms).

Cached: one access token (or API key) sent again and again; the gateway answers from its local cache.
Uncached: a different, never-seen credential per request, so each one costs an Auth.Authenticate round
trip (signature and claims, or the key's hash lookup in Postgres, plus the session-revocation check in
Redis). GET /health, which checks no credential, is the floor. Sequential requests on one keep-alive
HTTPS connection, so the numbers are per-request costs, not throughput; the variants take turns request
by request, so background load on this shared machine hits them alike. Rate limiting is off here (its
per-client Redis window would add a cost of its own; the edge benchmark measures it).
Run: `make bench` or `python -m bench.auth_bench`. Talks to 127.0.0.1 only; bounded in count and time.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx

from bench.load import LoadResult, run_load
from bench.results import median, percentile, write_section
from goblin.v1 import auth_pb2, auth_pb2_grpc
from goblin_tools.suite import Suite, start_suite

WORK = Path(__file__).resolve().parent / ".work"
ADMIN_EMAIL = "admin@goblin.local"
PASSWORD = "bench password, long enough"
ROUNDS = 400
WARM_UP = 20
LOGIN_RATE = 20
LOGIN_DURATION_S = 15
LOGIN_RUNS = 3


def timed(client: httpx.Client, path: str, credential: str | None) -> float:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    started = time.perf_counter()
    reply = client.get(path, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status_code != 200:
        raise RuntimeError(f"GET {path}: {reply.status_code} {reply.text[:200]}")
    return elapsed


def interleaved(client: httpx.Client, variants: dict[str, tuple[str, list[str | None]]]) -> dict[str, list[float]]:
    """One request of each variant per round; the first WARM_UP rounds are not counted."""
    results: dict[str, list[float]] = {label: [] for label in variants}
    rounds = min(len(credentials) for _, credentials in variants.values())
    for i in range(rounds):
        for label, (path, credentials) in variants.items():
            elapsed = timed(client, path, credentials[i])
            if i >= WARM_UP:
                results[label].append(elapsed)
    return results


def row(label: str, latencies: list[float]) -> str:
    return (
        f"| {label} | {len(latencies)} | {median(latencies):.2f} ms | {percentile(latencies, 95):.2f} ms | "
        f"{percentile(latencies, 99):.2f} ms |"
    )


def mint(client: httpx.Client, count: int) -> tuple[list[str], list[str]]:
    """``count`` distinct access tokens and ``count`` distinct API keys, none of them shown to the
    gateway yet (the keys are made with one other token), so none is in its cache."""
    tokens = [
        client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}).json()["access_token"]
        for _ in range(count + 1)
    ]
    maker = {"Authorization": f"Bearer {tokens.pop()}"}
    keys = [
        client.post("/auth/api-keys", json={"name": f"bench {i}", "scopes": ["chat"]}, headers=maker).json()["key"]
        for i in range(count)
    ]
    return tokens, keys


def grpc_authenticate(suite: Suite, credentials: list[str]) -> list[float]:
    """Auth.Authenticate straight to the auth service: the server-side cost of one uncached check."""
    with suite.grpc_channel("auth") as channel:
        stub = auth_pb2_grpc.AuthStub(channel)
        latencies = []
        for i, credential in enumerate(credentials):
            started = time.perf_counter()
            stub.Authenticate(auth_pb2.AuthenticateRequest(credential=credential))
            if i >= WARM_UP:
                latencies.append((time.perf_counter() - started) * 1000)
        return latencies


async def login_load(suite: Suite) -> LoadResult:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=suite.gateway_url, verify=suite.ssl_context(), limits=limits) as client:
        body = {"email": ADMIN_EMAIL, "password": PASSWORD}
        await run_load(client, "POST", "/auth/login", rate=LOGIN_RATE, duration_s=2, json=body)
        return await run_load(client, "POST", "/auth/login", rate=LOGIN_RATE, duration_s=LOGIN_DURATION_S, json=body)


def main() -> None:
    home = WORK / "auth"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, GOBLIN_ADMIN_PASSWORD=PASSWORD, GOBLIN_RATE_LIMIT_ENABLED="false")
    try:
        suite.wait_ready()
        with suite.client() as client:
            tokens, keys = mint(client, ROUNDS)
            measured = interleaved(
                client,
                {
                    "health": ("/health", [None] * ROUNDS),
                    "jwt_cached": ("/auth/me", [tokens[0]] * ROUNDS),
                    "key_cached": ("/auth/me", [keys[0]] * ROUNDS),
                    "jwt_uncached": ("/auth/me", list(tokens)),
                    "key_uncached": ("/auth/me", list(keys)),
                },
            )
        health, jwt_cached, key_cached = measured["health"], measured["jwt_cached"], measured["key_cached"]
        jwt_uncached, key_uncached = measured["jwt_uncached"], measured["key_uncached"]
        rpc_jwt = grpc_authenticate(suite, tokens)
        rpc_key = grpc_authenticate(suite, keys)
        login_runs = [asyncio.run(login_load(suite)) for _ in range(LOGIN_RUNS)]
    finally:
        suite.stop()

    def over(latencies: list[float]) -> str:
        return f"{median(latencies) - median(health):+.2f} ms"

    p95s = [percentile(run.latencies_ms, 95) for run in login_runs]
    login_p95 = median(p95s)
    logins = login_runs[sorted(range(LOGIN_RUNS), key=lambda i: p95s[i])[LOGIN_RUNS // 2]]
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(logins.status_counts.items()))
    runs = "; ".join(
        f"p50 {run.p50:.1f} / p95 {p95:.1f} / p99 {run.p99:.1f} ms at {run.rate:.1f}/s"
        for run, p95 in zip(login_runs, p95s, strict=True)
    )
    body = f"""
Token verification per request at the gateway: sequential GETs on one keep-alive HTTPS connection,
the variants taking turns, {ROUNDS - WARM_UP} rounds after {WARM_UP} warm-up rounds; client on the same
2 cores; rate limiting off.

| request | n | p50 | p95 | p99 |
| --- | --- | --- | --- | --- |
{row("GET /health (no credential: the floor)", health)}
{row("GET /auth/me, access token, cached", jwt_cached)}
{row("GET /auth/me, API key, cached", key_cached)}
{row("GET /auth/me, access token, uncached (new token each time)", jwt_uncached)}
{row("GET /auth/me, API key, uncached (new key each time)", key_uncached)}
{row("Auth.Authenticate gRPC direct, access token", rpc_jwt)}
{row("Auth.Authenticate gRPC direct, API key", rpc_key)}

Verification cost over the floor (p50): cached **{over(jwt_cached)}** (token), **{over(key_cached)}** (key);
uncached **{over(jwt_uncached)}** (token: ES256 signature and claims, Redis revocation check),
**{over(key_uncached)}** (key: SHA-256, Postgres lookup, first-use `last_used` write). A cached entry
lives `GOBLIN_AUTH_CACHE_TTL_S` (30 s) or until the credential expires, whichever is sooner.

Password sign-in, open loop at {LOGIN_RATE} logins/s for {LOGIN_DURATION_S} s, {LOGIN_RUNS} runs (POST /auth/login,
argon2id m=19 MiB t=2 p=1; latency from each request's scheduled time, so stalls count): median run
p50 **{logins.p50:.1f} ms**, p95 **{login_p95:.1f} ms**, p99 {logins.p99:.1f} ms ({statuses}). Each run: {runs}.
Goal p95 < 500 ms: **{"met" if login_p95 < 500 else "NOT met"}**.
"""
    write_section("Auth", body, "make bench (python -m bench.auth_bench)")
    print(body)


if __name__ == "__main__":
    main()
