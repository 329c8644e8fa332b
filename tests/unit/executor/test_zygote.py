"""The zygote (zygote.py, prefork.py): tasks start as forks of one resident launcher process, which
holds nothing a task could use, never signals a pid it has reaped, is replaced when it dies, and never
outlives its executor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import psutil

from services.executor import prefork
from services.executor.sandbox import run
from tests.unit.executor.processes import gone, python, spec
from tests.unit.executor.test_sandbox import REPO


def _zygote_pid() -> int:
    return prefork.current().popen.pid


async def _wait_gone(pid: int, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.05)):
        if gone(pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pid} still runs")


async def test_tasks_are_forks_of_one_zygote(work_root) -> None:
    pids: list[int] = []

    async def on_start(pid: int) -> None:
        pids.append(pid)
        parents.append(psutil.Process(pid).ppid())

    parents: list[int] = []
    for _ in range(3):  # each lives long enough to be looked at in on_start
        result = await run(spec(work_root, "/bin/sleep", "0.3"), on_start=on_start)
        assert result.status == "succeeded", result
    zygote = _zygote_pid()
    assert parents == [zygote] * 3 and len(set(pids)) == 3
    assert psutil.Process(zygote).name() == "goblin-zygote"


async def test_the_zygote_holds_no_secret_and_a_task_inherits_only_its_three_streams(work_root, monkeypatch) -> None:
    prefork.stop()
    monkeypatch.setenv("GOBLIN_DB_PASSWORD", "hunter2-secret")
    zygote = _zygote_pid()
    names = set(psutil.Process(zygote).environ())
    assert names == {"PATH", "LANG", "LC_ALL"}, names
    assert psutil.Process(zygote).uids().real == os.getuid()
    # The task's descriptors: 0, 1, 2, and the one ls opened for /proc/self/fd. Not the zygote's socket,
    # its wake-up pipe or the launcher's report pipe.
    result = await run(spec(work_root, "/bin/ls", "/proc/self/fd"))
    assert sorted(int(fd) for fd in result.stdout_tail.split()) == [0, 1, 2, 3], result


async def test_a_killed_zygote_is_replaced_by_the_next_task(work_root) -> None:
    first = _zygote_pid()
    os.kill(first, signal.SIGKILL)
    await _wait_gone(first)
    result = await run(spec(work_root, "/bin/echo", "again"))
    assert result.status == "succeeded" and result.stdout_tail == "again\n", result
    assert _zygote_pid() != first


async def test_a_task_running_when_its_zygote_dies_is_stopped_and_says_why(work_root) -> None:
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_start(pid: int) -> None:
        started.set_result(pid)

    task = spec(work_root, *python("import time; time.sleep(120)"), timeout_s=60, kill_grace_s=0.5)
    running = asyncio.create_task(run(task, on_start=on_start))
    launcher = psutil.Process(await asyncio.wait_for(started, 20))
    tree = [launcher, *launcher.children(recursive=True)]
    os.kill(_zygote_pid(), signal.SIGKILL)
    result = await asyncio.wait_for(running, 20)
    assert result.status == "failed" and result.exit_code is None
    assert prefork.LOST in result.error and "zygote) died" in result.error, result.error
    for process in tree:
        await _wait_gone(process.pid)
    after = await run(spec(work_root, "/bin/true"))
    assert after.status == "succeeded", after


async def test_the_zygote_never_signals_a_pid_it_did_not_start_or_already_reaped(work_root) -> None:
    ended: list[int] = []
    result = await run(spec(work_root, "/bin/true"), on_start=lambda pid: _record(ended, pid))
    assert result.status == "succeeded"
    # A process the zygote does not own, with the reaped launcher's pid or any other: left alone.
    bystander = subprocess.Popen(["/bin/sleep", "30"], start_new_session=True)  # noqa: ASYNC220
    try:
        zygote = prefork.current()
        for pid in (ended[0], bystander.pid):
            zygote.send({"op": "kill", "pid": pid, "sig": int(signal.SIGKILL)})
        await run(spec(work_root, "/bin/true"))  # one round trip: the kills were handled before it
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


async def _record(pids: list[int], pid: int) -> None:
    pids.append(pid)


async def test_a_garbled_request_is_ignored_and_the_zygote_serves_on(work_root) -> None:
    zygote = prefork.current()
    zygote.sock.send(b"not json")
    zygote.sock.send(json.dumps({"op": "run"}).encode())
    after = await run(spec(work_root, "/bin/true"))
    assert after.status == "succeeded", after
    assert zygote.alive


# An executor that starts a zygote and a task, prints both pids, and waits to be killed.
EXECUTOR = """
import asyncio, sys
from pathlib import Path
from services.executor import prefork
from services.executor.sandbox import run
from tests.unit.executor.processes import spec

async def main():
    async def on_start(pid):
        print(prefork.current().popen.pid, pid, flush=True)
    await run(spec(Path(sys.argv[1]), "/bin/sleep", "120", timeout_s=120, kill_grace_s=0.5), on_start=on_start)

asyncio.run(main())
"""


async def test_the_zygote_and_its_tasks_die_with_the_executor(work_root) -> None:
    executor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", EXECUTOR, str(work_root), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    zygote, launcher = map(int, (await asyncio.wait_for(executor.stdout.readline(), 30)).split())
    tree = [launcher, *(p.pid for p in psutil.Process(launcher).children(recursive=True))]
    executor.kill()
    await executor.wait()
    for pid in (zygote, *tree):
        await _wait_gone(pid)


def test_the_zygote_exits_on_the_end_of_its_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = subprocess.Popen(
        [sys.executable, "-I", "-S", prefork.ZYGOTE, str(os.getpid()), str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env=prefork.ZYGOTE_ENV,
    )
    theirs.close()
    ours.close()
    assert zygote.wait(timeout=10) == 0


async def test_a_request_larger_than_a_datagram_still_starts_the_task(work_root) -> None:
    # 800 KB of argv (one item may hold at most 128 KiB), far beyond the socket's datagram size.
    items = ["x" * (100 << 10)] * 8
    result = await run(spec(work_root, "/bin/sh", "-c", 'printf %s "$@" | wc -c', "sh", *items))
    assert result.status == "succeeded" and result.stdout_tail.strip() == str(sum(map(len, items))), result


async def test_a_start_cancelled_while_the_zygote_forks_leaves_no_process(work_root) -> None:
    marker = f"{os.getpid()}{id(work_root)}"
    config = {"cwd": str(work_root), "cpu_s": 60, "memory_bytes": 1 << 30, "max_processes": 64}
    config |= {"max_file_bytes": 1 << 20, "max_open_files": 64, "kill_grace_s": 1, "report": os.open(os.devnull, 1)}
    try:
        starting = asyncio.create_task(
            prefork.current().launch(config, ["/bin/sleep", marker], {"PATH": "/bin"}, str(work_root), None)
        )
        await asyncio.sleep(0)  # the request is sent; the zygote forks while we no longer wait for it
        starting.cancel()
        try:
            await starting
        except asyncio.CancelledError:
            pass
        else:  # it had started already: stopped the usual way
            starting.result().signal_group(signal.SIGINT)
        await asyncio.sleep(1.0)  # time enough for a launcher nobody stopped to exec its task
        for _ in range(100):
            if not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the task of a cancelled start still runs")
    finally:
        os.close(config["report"])
    after = await run(spec(work_root, "/bin/true"))
    assert after.status == "succeeded", after


async def test_starts_beyond_the_socket_buffer_wait_for_the_zygote_rather_than_fail(work_root) -> None:
    # Ten requests of ~50 KB each, sent while the zygote does not read: more than the socket's buffer
    # holds (~200 KB). The executor waits for room; every task starts once the zygote reads again.
    zygote = prefork.current()
    argv = ("/bin/sh", "-c", "exit 0", "sh", "x" * (50 << 10))
    os.kill(zygote.popen.pid, signal.SIGSTOP)
    try:
        starting = [asyncio.create_task(run(spec(work_root, *argv))) for _ in range(10)]
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in starting), [task.result() for task in starting if task.done()]
    finally:
        os.kill(zygote.popen.pid, signal.SIGCONT)
    results = await asyncio.wait_for(asyncio.gather(*starting), 30)
    assert [r.status for r in results] == ["succeeded"] * 10, [r.error for r in results if r.status != "succeeded"]


async def test_a_zygote_that_does_not_answer_is_replaced(work_root, monkeypatch) -> None:
    stuck = prefork.current().popen
    monkeypatch.setattr(prefork, "START_TIMEOUT_S", 1.0)
    os.kill(stuck.pid, signal.SIGSTOP)
    result = await run(spec(work_root, "/bin/true"))
    assert result.status == "failed" and "did not answer within 1 s" in result.error, result
    await _wait_gone(stuck.pid)
    after = await run(spec(work_root, "/bin/true"))
    assert after.status == "succeeded", after
    assert prefork.current().popen.pid != stuck.pid
