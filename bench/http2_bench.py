"""The gateway's protocol layer, HTTP/2 beside HTTP/1.1, and HTTP/1.1 before and after HTTP/2 came.

One uvicorn process with the gateway's own configuration (services/gateway/tls.py: TLS, uvloop, the
bounds) in front of a small ASGI app that reads a chat-sized JSON POST and answers a chat-sized JSON
body, so that what is measured is the server's protocol work, not Goblin's. An open-loop load
(bench/load.py) at a fixed rate; the server's CPU per request from its process times.

Rows:
- HTTP/1.1, before: uvicorn's httptools protocol with our bounds only (what the gateway ran before HTTP/2);
- HTTP/1.1, after: the same client against the ALPN protocol (http2.AlpnHttpProtocol);
- HTTP/2: the same load multiplexed on one connection.

The load generator shares the machine's cores with the server: its CPU per request is in the table.
Run: ``python -m bench.http2_bench [--rate 300] [--duration 10]`` (``BENCH_NO_WRITE=1`` to leave RESULTS.md alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from bench.load import LoadResult, run_load
from bench.results import write_section
from goblin_tools.suite import free_ports
from services.gateway.http_protocol import BoundedHttpToolsProtocol
from services.gateway.tls import ensure_dev_certificates, https_config

WORK = Path(__file__).resolve().parent / ".work" / "http2"
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "fake/model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 20}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    }
).encode()
CHAT = {"model": "fake/model", "messages": [{"role": "user", "content": "Say hello in twenty words."}]}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the request body, answer a chat completion's worth of JSON."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(port: int, tls_dir: Path, mode: str) -> None:
    """The server process: ``mode`` ``before`` is HTTP/1.1 only (httptools, no ALPN), ``after`` the gateway's."""
    _ca, cert, key = ensure_dev_certificates(tls_dir)
    config = https_config(app, "127.0.0.1", port, cert, key, None)
    if mode == "before":
        config.http = BoundedHttpToolsProtocol
        config.ssl.set_alpn_protocols(["http/1.1"])  # type: ignore[union-attr]
    uvicorn.Server(config).run()


def start_server(mode: str, tls_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_ports(1)[0]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.http2_bench", "serve", str(port), str(tls_dir), mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ca = tls_dir / "ca.pem"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with httpx.Client(verify=str(ca), timeout=2) as client:
                if client.post(f"https://127.0.0.1:{port}/", json=CHAT).status_code == 200:
                    return process, port
        except (httpx.HTTPError, OSError):
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {mode} server did not start")


async def load(port: int, ca: Path, http2: bool, rate: float, duration_s: float) -> LoadResult:
    limits = httpx.Limits(max_connections=1 if http2 else 64, max_keepalive_connections=64)
    async with httpx.AsyncClient(verify=str(ca), http2=http2, limits=limits, timeout=30) as client:
        await run_load(client, "POST", f"https://127.0.0.1:{port}/", rate=rate, duration_s=1, json=CHAT)  # warm
        return await run_load(client, "POST", f"https://127.0.0.1:{port}/", rate=rate, duration_s=duration_s, json=CHAT)


def measure(mode: str, http2: bool, rate: float, duration_s: float) -> dict[str, float]:
    tls_dir = WORK / "tls"
    ensure_dev_certificates(tls_dir)
    process, port = start_server(mode, tls_dir)
    try:
        server = psutil.Process(process.pid)
        server_before = server.cpu_times()
        generator_before = time.process_time()
        result = asyncio.run(load(port, tls_dir / "ca.pem", http2, rate, duration_s))
        server_after = server.cpu_times()
        generator_cpu = time.process_time() - generator_before
    finally:
        process.terminate()
        process.wait(timeout=30)
    served = max(result.ok, 1)
    # The warm-up second's requests are in the CPU deltas too: count them.
    requests = served + int(rate)
    server_cpu = (server_after.user + server_after.system) - (server_before.user + server_before.system)
    return {
        "ok": result.ok,
        "errors": result.errors + result.sent - result.ok,
        "rate": result.ok / result.elapsed_s if result.elapsed_s else 0.0,
        "p50": result.p50,
        "p99": result.p99,
        "server_cpu_ms": server_cpu / requests * 1000,
        "generator_cpu_ms": generator_cpu / requests * 1000,
    }


def table(rows: list[tuple[str, dict[str, float]]], rate: float, duration_s: float) -> str:
    load_average = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"POST of a chat-sized JSON at {rate:.0f} req/s for {duration_s:.0f} s over TLS, open loop; "
        f"load average before the run: {load_average}. Generator and server share the cores.",
        "",
        "| protocol | served/s | errors | p50 ms | p99 ms | server CPU/request ms | generator CPU/request ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['rate']:.0f} | {r['errors']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{r['server_cpu_ms']:.3f} | {r['generator_cpu_ms']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    load_average = os.getloadavg()
    cases = [
        ("HTTP/1.1, before (httptools only)", "before", False),
        ("HTTP/1.1, after (ALPN protocol)", "after", False),
        ("HTTP/2, one connection", "after", True),
    ]
    rows = [(label, measure(mode, http2, args.rate, args.duration)) for label, mode, http2 in cases]
    body = table(rows, args.rate, args.duration)
    print(body)
    print(f"load average before: {load_average}, after: {os.getloadavg()}")
    write_section("HTTP/2 at the gateway", body, f"python -m bench.http2_bench --rate {args.rate:.0f}")


if __name__ == "__main__":
    main()
