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

import shutil
import sys

from bench.gateway_profile import CPU_REQUESTS, FAKE_KEY, per_request_cpu, profile, summarize
from bench.router_bench import WORK, fake_base_url, start_fake
from goblin_tools.suite import free_ports, start_suite


def main() -> None:
    fake_port = free_ports(1)[0]
    fake = start_fake(fake_port)
    home = WORK / "router-profile"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=fake_base_url(fake_port))
    try:
        suite.wait_ready()
        cpu, threads = per_request_cpu(suite, "router")
        print(f"CPU per request ({CPU_REQUESTS} requests, one at a time): " + ", ".join(
            f"{name} {ms:.2f} ms" for name, ms in cpu.items()
        ))  # fmt: skip
        busy = sorted(((ms, name) for name, ms in threads.items() if ms >= 0.01), reverse=True)
        print("router threads, CPU per request: " + ", ".join(f"{name} {ms:.2f} ms" for ms, name in busy))
        if "--cpu-only" in sys.argv:
            return
        raw = profile(suite, home / "router.raw", "router")
        if raw is not None and raw.exists():
            print(summarize(raw, threads.get("python", cpu["router"])))
    finally:
        suite.stop()
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
