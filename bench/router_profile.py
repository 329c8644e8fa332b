"""Router CPU profile: where the router's CPU per request goes, by function.

The gateway profile's method (bench/gateway_profile.py) pointed at the router process: the suite with
every feature on (API-key auth, rate limits, secret scanning, budgets, the ledger, breakers, metrics,
JSON logs, mutual TLS, the signed principal), a fake OpenAI provider, non-streaming chat completions
through the gateway, then:

1. CPU per request of the router (and gateway), from /proc, over ``PROFILE_CPU_REQUESTS`` requests sent
   one at a time after a warm-up, and of each of the router's threads;
2. if py-spy is on PATH (``pip install py-spy``; not a dependency), samples the router's event-loop
   thread while a closed loop of ``PROFILE_CONCURRENCY`` clients sends ``PROFILE_REQUESTS`` more, and
   prints the functions by inclusive and by own share of the samples.

Run: ``python -m bench.router_profile`` (127.0.0.1 only; bounded in count and time). Prints; writes
nothing but its work directory (bench/.work/router-profile).
"""

from __future__ import annotations

from bench.gateway_profile import main

if __name__ == "__main__":
    main("router")
