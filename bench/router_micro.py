"""The router's per-request parts, old way against new, in one process, alternated round by round so
that the shared machine's drift hits both alike: CPU microseconds per operation (process time of this
process only; the fake provider's own work is not counted).

- the signed principal's verification: OpenSSL through ``cryptography`` with ``json`` (before) and
  libsodium through PyNaCl with ``orjson`` (services.common.principal);
- the provider call of a non-streaming chat (a fake OpenAI provider in its own process, HTTP/1.1
  keep-alive): an ``httpx.Request`` through the ``httpx-aiohttp`` transport (before) and the request
  straight through that transport's aiohttp session (services.router.providers.http).

Run: ``python -m bench.router_micro`` (prints a markdown table; writes nothing).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.principal import InvalidPrincipal, Principal, PrincipalSigner, PrincipalVerifier, _unb64

ROUNDS = int(os.environ.get("MICRO_ROUNDS", "7"))
CALLS = int(os.environ.get("MICRO_CALLS", "400"))
CALLER = Principal(user_id="3f0c5a2e-user", tenant_id="default", role="admin", scopes=("*",), api_key_id="key-1")


def timed_sync(fn: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        fn()
    return (time.process_time() - started) / CALLS * 1e6


async def timed_async(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        await fn()
    return (time.process_time() - started) / CALLS * 1e6


def openssl_verify(verifier: PrincipalVerifier, assertion: str) -> dict[str, Any]:
    """The verification as it was: OpenSSL's Ed25519 (cryptography), then json (claims checks apart,
    which are the same in both)."""
    body, _, signature = assertion.partition(".")
    try:
        verifier._key.verify(_unb64(signature), body.encode("ascii"))
        return json.loads(_unb64(body))
    except (InvalidSignature, ValueError):
        raise InvalidPrincipal("principal signature does not verify") from None


def principal_cases() -> dict[str, Callable[[], object]]:
    signer = PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)
    verifier = signer.verifier()
    assertion = signer.sign(CALLER)
    return {
        "principal: OpenSSL Ed25519 + json (before)": lambda: openssl_verify(verifier, assertion),
        "principal: libsodium Ed25519 + orjson (kept)": lambda: verifier._claims(*assertion.split(".")),
    }


def main() -> None:
    sync_cases = principal_cases()
    results: dict[str, list[float]] = {name: [] for name in sync_cases}
    for _ in range(ROUNDS):
        for name, fn in sync_cases.items():
            results[name].append(timed_sync(fn))
    print(f"{ROUNDS} rounds of {CALLS} calls, load average {os.getloadavg()[0]:.1f}\n")
    print("| part of a request | CPU per call, median (µs) | min |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")


if __name__ == "__main__":
    uvloop.install()
    main()
