"""The launcher's start from a real service process, the reasons it reports, and its orphan guard.

Each executor here is a separate Python process (the service's shape: uvloop, a busy gRPC server),
so that what a fork would copy, and what its death leaves behind, is real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from services.executor import prefork
from services.executor.sandbox import run
from tests.unit.executor.processes import gone, spec
from tests.unit.executor.test_sandbox import REPO

# A service-shaped executor: uvloop, a gRPC server answering clients that never stop calling it, and
# tasks started four at a time. Before spawn.py, the launcher was started by uvloop's fork(), which
# runs gRPC's fork handlers (each start logged "fork_posix.cc ... skipping fork() handlers"), and in
# the forked copy of the busy gRPC process some starts died of SIGABRT ("ev_epoll1_linux.cc Check
# failed") or SIGSEGV before their exec: about 8 % of 500 bare uvloop spawns here (SANDBOX.md), and
# the SIGABRT flake of test_executor.py. How often depends on timing; that a fork happens does not.
BUSY_EXECUTOR = """
import asyncio, collections, json, sys, threading
from pathlib import Path
import grpc, uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from services.executor import prefork
from services.executor.sandbox import run
from tests.unit.executor.processes import spec

def call_forever(port, stop):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    while not stop.is_set():
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            pass

async def main(root, count):
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = threading.Event()
    for _ in range(3):
        threading.Thread(target=call_forever, args=(port, stop), daemon=True).start()
    slots = asyncio.Semaphore(int(sys.argv[3]) if len(sys.argv) > 3 else 4)
    async def one():
        async with slots:
            result = await run(spec(root, "/bin/true", timeout_s=60))
            return (result.status, result.signal, result.error)
    results = await asyncio.gather(*(one() for _ in range(count)))
    stop.set()
    await server.stop(0)
    print(json.dumps(collections.Counter(map(str, results))), flush=True)

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main(Path(sys.argv[1]), int(sys.argv[2])))
"""

# An executor that starts one task whose main process ignores SIGTERM and whose grandchild left the
# session, prints the launcher's pid and the grandchild's, and waits to be killed.
ORPHANING_EXECUTOR = """
import asyncio, sys
from pathlib import Path
from services.executor import prefork
from services.executor.sandbox import run
from tests.unit.executor.processes import spec
from tests.unit.executor.test_sandbox import tree

async def main():
    async def on_start(pid):
        print(pid, flush=True)
    async def on_output(stream, line):
        print(line, flush=True)
    argv = tree(True, then="import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)")
    await run(spec(Path(sys.argv[1]), *argv, timeout_s=120, kill_grace_s=1.0), on_output=on_output, on_start=on_start)

asyncio.run(main())
"""


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def test_tasks_start_from_a_busy_grpc_process_on_uvloop_without_a_fork(work_root: Path) -> None:
    executor = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BUSY_EXECUTOR,
        str(work_root),
        "80",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "GRPC_VERBOSITY": "INFO", "PYTHONPATH": str(REPO)},
    )
    out, err = await asyncio.wait_for(executor.communicate(), 240)
    assert executor.returncode == 0, err.decode()[-3000:]
    outcomes = json.loads(out.decode().strip().splitlines()[-1])
    assert outcomes == {str(("succeeded", None, None)): 80}, outcomes
    # gRPC's fork handlers never ran: no task start forked the executor.
    assert "fork_posix" not in err.decode(), err.decode()[-3000:]


async def test_the_reason_says_how_a_task_died(work_root: Path) -> None:
    aborted = await run(spec(work_root, "/bin/sh", "-c", "kill -ABRT $$"))
    assert aborted.signal == signal.SIGABRT and aborted.stderr_tail == ""
    assert aborted.error.startswith("killed by SIGABRT; the task's first process was killed by SIGABRT")
    assert aborted.error.endswith("after its exec")
    missing = await run(spec(work_root, "/nonexistent/program"))
    assert missing.error == (
        "exited with code 127; goblin sandbox: cannot run /nonexistent/program: No such file or directory"
    )
    # A task cannot write the launcher's reasons: only its own stderr.
    forged = await run(spec(work_root, "/bin/sh", "-c", "echo started >&2; echo 'the launcher failed' >&2; exit 4"))
    assert forged.error == "exited with code 4"


async def test_an_orphaned_launcher_stops_its_task_after_the_grace_and_exits_without_spinning(work_root: Path) -> None:
    executor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHANING_EXECUTOR, str(work_root), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    launcher_pid = int(await asyncio.wait_for(executor.stdout.readline(), 30))
    grandchild = int(await asyncio.wait_for(executor.stdout.readline(), 30))
    launcher = psutil.Process(launcher_pid)
    everything = [launcher, *launcher.children(recursive=True)]
    assert grandchild in {p.pid for p in everything}
    await asyncio.sleep(1.0)
    idle_cpu = _cpu_s(launcher)
    await asyncio.sleep(2.0)
    assert _cpu_s(launcher) - idle_cpu < 0.05, "a launcher waiting for its task uses no CPU"
    killed_at = time.monotonic()
    executor.kill()  # no cleanup of its own: the launcher must notice and act alone
    await executor.wait()
    cpu_at_kill, last_cpu = _cpu_s(launcher), _cpu_s(launcher)
    while not all(gone(p.pid) for p in everything):
        assert time.monotonic() - killed_at < 10, [p.pid for p in everything if not gone(p.pid)]
        if not gone(launcher_pid):
            try:
                last_cpu = _cpu_s(launcher)
            except psutil.NoSuchProcess:
                pass
        await asyncio.sleep(0.05)
    # SIGTERM first (ignored here), so nothing dies before the grace; then everything at once.
    assert time.monotonic() - killed_at >= 0.9
    assert last_cpu - cpu_at_kill < 0.5, "the launcher's sweep is short, not a loop"


async def test_a_launcher_that_cannot_be_started_fails_the_task_with_the_reason(
    work_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefork.stop()  # the next task starts a new zygote, with this interpreter
    monkeypatch.setattr(prefork.sys, "executable", "/nonexistent/python")
    result = await run(spec(work_root, "/bin/true"))
    assert result.status == "failed" and result.exit_code is None
    assert result.error.startswith("cannot start it: [Errno 2] No such file or directory")
    assert not os.listdir(work_root), "its directory is removed all the same"
