"""Gateway CPU profile: where the gateway's CPU per request goes, by function.

Starts the suite (every feature on: API-key auth, rate limits, secret scanning, budgets, the ledger,
metrics, JSON logs, mutual TLS, the signed principal) with a fake OpenAI provider, as the router
benchmark does, then:

1. CPU per request of the gateway (and router), from /proc, over ``PROFILE_CPU_REQUESTS`` non-streaming
   chat completions sent one at a time after a warm-up (the router benchmark's method);
2. if py-spy is on PATH (``pip install py-spy``; it is not a dependency), samples the gateway while a
   closed loop of ``PROFILE_CONCURRENCY`` clients sends ``PROFILE_REQUESTS`` more, and prints the
   functions by inclusive and by own ("self") share of the samples.

Run: ``python -m bench.gateway_profile`` (127.0.0.1 only; bounded in count and time). Prints; writes
nothing but its work directory (bench/.work/gateway-profile).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import uvloop

from bench.router_bench import MESSAGES, MODEL, WORK, fake_base_url, start_fake
from goblin_tools.suite import Suite, free_ports, start_suite

CPU_REQUESTS = int(os.environ.get("PROFILE_CPU_REQUESTS", "500"))
PROFILE_REQUESTS = int(os.environ.get("PROFILE_REQUESTS", "3000"))
CONCURRENCY = int(os.environ.get("PROFILE_CONCURRENCY", "2"))
RATE_HZ = int(os.environ.get("PROFILE_RATE_HZ", "400"))
TOP = int(os.environ.get("PROFILE_TOP", "45"))
FAKE_KEY = "test-key-openai"
# This tree's root: the gateway runs its code, so its frames are named from here (services/...).
REPO = f"{Path(__file__).resolve().parents[1]}/"
BODY = {"model": f"openai/{MODEL}", "messages": MESSAGES, "max_tokens": 16}


async def load(suite: Suite, requests: int, concurrency: int) -> None:
    """``requests`` chat completions through the gateway, ``concurrency`` at a time."""
    url = f"{suite.gateway_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {suite.admin_key}"}
    left = requests
    connector = aiohttp.TCPConnector(ssl=suite.ssl_context(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with http.post(url, json=BODY, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise RuntimeError(f"HTTP {reply.status}: {await reply.text()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def cpu_ms(suite: Suite, services: tuple[str, ...]) -> dict[str, float]:
    return {name: sum(suite.service_process(name).cpu_times()[:2]) * 1000 for name in services}


def thread_cpu_ms(pid: int) -> dict[str, float]:
    """CPU milliseconds of each thread of ``pid``, by thread name (threads of one name summed)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        used[name] += (int(fields[11]) + int(fields[12])) * 1000 / ticks  # utime + stime
    return dict(used)


def per_request_cpu(suite: Suite, service: str = "gateway") -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds of CPU per request of the gateway and the router, requests sent one at a time; and
    of each of ``service``'s threads (bench.router_profile asks for the router's)."""
    uvloop.run(load(suite, 50, 1))
    pid = suite.service_process(service).pid
    before, threads_before = cpu_ms(suite, ("gateway", "router")), thread_cpu_ms(pid)
    uvloop.run(load(suite, CPU_REQUESTS, 1))
    after, threads_after = cpu_ms(suite, ("gateway", "router")), thread_cpu_ms(pid)
    threads = {name: (threads_after[name] - threads_before.get(name, 0)) / CPU_REQUESTS for name in threads_after}
    return {name: (after[name] - before[name]) / CPU_REQUESTS for name in before}, threads


def profile(suite: Suite, out: Path, service: str = "gateway") -> Path | None:
    """py-spy's raw (collapsed) stacks of ``service`` under a bounded closed loop, or None without py-spy."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not on PATH: no profile (pip install py-spy)", file=sys.stderr)
        return None
    pid = suite.service_process(service).pid
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        uvloop.run(load(suite, PROFILE_REQUESTS, CONCURRENCY))
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        recorder.wait(timeout=30)
    return out


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module path)`` without the line, so one function is one row."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", REPO, "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize(raw: Path, main_thread_ms: float) -> str:
    """Functions by inclusive and by self share of the event loop thread's samples, as two markdown
    tables, with that share of ``main_thread_ms`` (the thread's CPU per request). Other threads (gRPC's
    poller, blocked in C without the GIL, which py-spy cannot tell from running) are left out: /proc
    says what they cost."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames[0].startswith("Thread._bootstrap"):
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return "no samples"

    def table(counts: Counter[str], title: str) -> str:
        rows = [
            f"| {name} | {100 * n / total:.1f} % | {main_thread_ms * n / total:.3f} |"
            for name, n in counts.most_common(TOP)
        ]
        header = f"| function ({title}) | share of samples | ms per request |"
        return "\n".join([header, "| --- | --- | --- |", *rows])

    return f"{total} samples\n\n{table(inclusive, 'inclusive')}\n\n{table(own, 'self')}"


def main(service: str = "gateway") -> None:
    """Profile ``service`` (bench.router_profile: the router); ``--cpu-only`` stops after the CPU figures."""
    fake_port = free_ports(1)[0]
    fake = start_fake(fake_port)
    home = WORK / f"{service}-profile"
    shutil.rmtree(home, ignore_errors=True)
    suite = start_suite(home, OPENAI_API_KEY=FAKE_KEY, OPENAI_BASE_URL=fake_base_url(fake_port))
    try:
        suite.wait_ready()
        cpu, threads = per_request_cpu(suite, service)
        print(f"CPU per request ({CPU_REQUESTS} requests, one at a time): " + ", ".join(
            f"{name} {ms:.2f} ms" for name, ms in cpu.items()
        ))  # fmt: skip
        busy = sorted(((ms, name) for name, ms in threads.items() if ms >= 0.01), reverse=True)
        print(f"{service} threads, CPU per request: " + ", ".join(f"{name} {ms:.2f} ms" for ms, name in busy))
        if "--cpu-only" in sys.argv:
            return
        raw = profile(suite, home / f"{service}.raw", service)
        if raw is not None and raw.exists():
            print(summarize(raw, threads.get("python", cpu[service])))
    finally:
        suite.stop()
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
