"""Provider transports: what each way of reaching a provider costs the router per request.

The router reaches a provider over HTTP/2 when it is ``https://`` and offers ``h2`` (httpx's transport
and the pure-Python ``h2``), else over HTTP/1.1 keep-alive (aiohttp's transport under httpx). The
router benchmark's fake provider is plain HTTP; real providers are HTTPS and offer HTTP/2, so this
measures the difference the router benchmark cannot see: the router's own provider call
(``OpenAICompatibleProvider.post_json``, one request at a time, a warm connection) over

- HTTP/1.1, plain: the fake provider (goblin_tools/fakes/providers.py), as in the router benchmark;
- HTTP/1.1 over TLS: the same fake provider over HTTPS, for a provider with ``http2: false``;
- HTTP/2 over TLS: an HTTP/2-only TLS provider (goblin_tools/fakes/h2.py), the default for HTTPS providers.

Each provider runs in its own process. Reported: the router's CPU per request (this process's CPU time)
and the round-trip p50, medians over rounds that interleave the transports.
Run: `make bench` or `python -m bench.transport_bench`. 127.0.0.1 only; bounded in count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import uvloop

from bench.results import median, write_section
from bench.router_bench import FAKE_KEY, MESSAGES, MODEL, start_process, wait_listening
from goblin_tools.suite import free_ports
from services.gateway.tls import ensure_dev_certificates
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider

WORK = Path(__file__).resolve().parent / ".work" / "transport"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "500"))  # per transport and round
WARM_UP = 200
BODY = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 16}


async def measure(urls: dict[str, tuple[str, bool]]) -> dict[str, tuple[float, float]]:
    """Per transport: (median CPU ms per request, median round-trip p50 ms)."""
    providers = {
        name: OpenAICompatibleProvider("openai", url, FAKE_KEY, HttpOptions(), http2=http2)
        for name, (url, http2) in urls.items()
    }
    cpu: dict[str, list[float]] = {name: [] for name in providers}
    p50: dict[str, list[float]] = {name: [] for name in providers}
    try:
        for provider in providers.values():
            for _ in range(WARM_UP):
                await provider.post_json("/chat/completions", BODY)
        for _ in range(ROUNDS):
            for name, provider in providers.items():
                latencies = []
                started = time.process_time()
                for _ in range(REQUESTS):
                    sent = time.perf_counter()
                    await provider.post_json("/chat/completions", BODY)
                    latencies.append((time.perf_counter() - sent) * 1000)
                cpu[name].append((time.process_time() - started) * 1000 / REQUESTS)
                p50[name].append(median(latencies))
    finally:
        for provider in providers.values():
            await provider.aclose()
    return {name: (median(cpu[name]), median(p50[name])) for name in providers}


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    ca, cert, key = ensure_dev_certificates(WORK)
    plain_port, tls_port, h2_port = free_ports(3)
    tls = ["--certfile", str(cert), "--keyfile", str(key)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            wait_listening(
                start_process("goblin_tools.fakes.providers", "--port", str(plain_port)), plain_port, "plain"
            )
        )
        processes.append(
            wait_listening(
                start_process("goblin_tools.fakes.providers", "--port", str(tls_port), *tls), tls_port, "https"
            )
        )
        processes.append(
            wait_listening(start_process("goblin_tools.fakes.h2", "--port", str(h2_port), *tls), h2_port, "h2")
        )
        # How a deployment trusts a private CA, too: both transports read it through OpenSSL's defaults.
        os.environ["SSL_CERT_FILE"] = str(ca)
        results = uvloop.run(
            measure(
                {
                    "HTTP/1.1, plain (aiohttp)": (f"http://127.0.0.1:{plain_port}/openai/v1", True),
                    "HTTP/1.1 over TLS (aiohttp)": (f"https://127.0.0.1:{tls_port}/openai/v1", False),
                    "HTTP/2 over TLS (httpx + h2)": (f"https://127.0.0.1:{h2_port}/openai/v1", True),
                }
            )
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    baseline = results["HTTP/1.1 over TLS (aiohttp)"][0]
    rows = "\n".join(
        f"| {name} | {cpu:.3f} ms | {cpu / baseline:.2f}x | {p50:.2f} ms |" for name, (cpu, p50) in results.items()
    )
    body = f"""
The router's provider call (`OpenAICompatibleProvider.post_json`, a warm connection, one request at a
time) over each transport: the router process's CPU per request and the round-trip p50, medians of
{ROUNDS} interleaved rounds of {REQUESTS} requests. The router benchmark's fake provider is plain HTTP;
real providers are HTTPS and offer HTTP/2, which the router uses by default (`http2: true` in the
catalog).

| transport | router CPU per request | vs HTTP/1.1 over TLS | p50 |
| --- | --- | --- | --- |
{rows}
"""
    write_section("Provider transports", body, "make bench (python -m bench.transport_bench)")
    print(body)


if __name__ == "__main__":
    main()
