"""The sandbox with real processes: outcomes, limits, killing whole trees, environment, directories."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from services.executor import sandbox, taskuser
from services.executor.limits import Limits
from services.executor.sandbox import MAX_LINE_BYTES, RunSpec, clean_environment, plan, run
from tests.unit.executor.processes import PY, Lines, gone, python, spec

IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[3]

# The task's main process starts a middle process that starts a grandchild and exits at once, so the
# grandchild re-parents; the grandchild ignores SIGTERM (and, with ESCAPE, leaves the session too).
GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[1] == "escape":
    os.setsid()
print(os.getpid(), flush=True)
time.sleep(120)
"""
MIDDLE = "import subprocess, sys; subprocess.Popen([sys.executable, '-I', '-S', '-c', sys.argv[1], sys.argv[2]])"


def tree(escape: bool, then: str = "time.sleep(120)") -> tuple[str, ...]:
    code = (
        "import subprocess, sys, time\n"
        f"args = [{MIDDLE!r}, {GRANDCHILD!r}, {'escape' if escape else 'stay'!r}]\n"
        "subprocess.Popen([sys.executable, '-I', '-S', '-c', *args])\n"
        f"{then}\n"
    )
    return python(code)


async def test_success_streams_lines_in_order(work_root: Path) -> None:
    lines = Lines()
    started: list[int] = []

    async def on_start(pid: int) -> None:
        started.append(pid)
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own group and session

    result = await run(
        spec(work_root, "/bin/sh", "-c", "echo one; echo two; echo warn >&2"), on_output=lines, on_start=on_start
    )
    assert result.status == "succeeded" and result.exit_code == 0 and result.signal is None
    assert result.error is None
    assert lines["stdout"] == ["one", "two"] and lines["stderr"] == ["warn"]
    assert result.stdout_tail == "one\ntwo\n" and result.stdout_bytes == 8 and result.stderr_bytes == 5
    assert len(started) == 1


async def test_failure_reports_the_exit_code(work_root: Path) -> None:
    result = await run(spec(work_root, "/bin/sh", "-c", "echo bad >&2; exit 3"))
    assert result.status == "failed" and result.exit_code == 3
    assert result.stderr_tail == "bad\n" and result.error == "exited with code 3"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
async def test_a_signal_death_is_reported_as_that_signal(work_root: Path, sig: signal.Signals) -> None:
    result = await run(spec(work_root, "/bin/sh", "-c", f"kill -{sig.name[3:]} $$"))
    assert result.status == "failed" and result.signal == sig and result.exit_code is None
    assert result.error.startswith(f"killed by {sig.name}") and result.stderr_tail == ""


async def test_a_missing_program_fails_with_a_message(work_root: Path) -> None:
    result = await run(spec(work_root, "/nonexistent/program"))
    assert result.status == "failed" and result.exit_code == 127
    assert "cannot run /nonexistent/program" in result.stderr_tail


@pytest.mark.parametrize("escape", [False, True], ids=["same-session", "setsid-escape"])
async def test_timeout_kills_the_whole_tree(work_root: Path, escape: bool) -> None:
    lines = Lines()
    result = await run(spec(work_root, *tree(escape), timeout_s=3, kill_grace_s=0.5), on_output=lines)
    assert result.status == "timed_out" and result.error == "timed out after 3 s"
    grandchild = int(lines["stdout"][0])
    assert gone(grandchild)
    assert result.duration_s < 3 + 0.5 + 3
    assert os.listdir(work_root) == []


async def test_a_main_process_that_ignores_sigterm_is_killed_by_the_launcher(work_root: Path) -> None:
    lines = Lines()
    stubborn = tree(True, then="import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)")
    result = await run(spec(work_root, *stubborn, timeout_s=2, kill_grace_s=0.3), on_output=lines)
    assert result.status == "timed_out" and result.signal == signal.SIGKILL
    assert gone(int(lines["stdout"][0]))
    # The launcher's own SIGKILL at the end of the grace, not this side's fallback 2 s later.
    assert result.duration_s < 2 + 0.3 + 1.5


@pytest.mark.parametrize("escape", [False, True], ids=["same-session", "setsid-escape"])
async def test_cancel_kills_the_whole_tree(work_root: Path, escape: bool) -> None:
    cancel = asyncio.Event()
    pids: list[int] = []

    async def on_output(stream: str, line: str) -> None:
        pids.append(int(line))
        cancel.set()

    result = await run(
        spec(work_root, *tree(escape), timeout_s=60, kill_grace_s=0.5), on_output=on_output, cancel=cancel
    )
    assert result.status == "cancelled" and result.error == "cancelled"
    assert gone(pids[0])
    assert result.duration_s < 10
    assert os.listdir(work_root) == []


async def test_leftovers_die_when_the_main_process_ends(work_root: Path) -> None:
    lines = Lines()
    result = await run(spec(work_root, *tree(True, then="time.sleep(1)"), timeout_s=30), on_output=lines)
    assert result.status == "succeeded"
    assert gone(int(lines["stdout"][0]))


async def test_memory_limit(work_root: Path) -> None:
    result = await run(spec(work_root, *python("bytearray(2 * 1024**3)"), memory_bytes=256 << 20))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


async def test_cpu_limit_kills_a_busy_loop_long_before_the_wall_clock(work_root: Path) -> None:
    result = await run(spec(work_root, *python("while True: pass"), cpu_s=1, timeout_s=60))
    assert result.status == "failed"
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL)
    assert "killed by SIG" in result.error
    assert result.duration_s < 15


async def test_file_size_limit(work_root: Path) -> None:
    result = await run(spec(work_root, "/bin/sh", "-c", "head -c 2000000 /dev/zero > big", max_file_bytes=1 << 20))
    assert result.status == "failed"


async def test_rlimits_and_no_core_dumps_and_no_new_privs(work_root: Path) -> None:
    limits = dict(memory_bytes=300 << 20, max_processes=40, max_file_bytes=5 << 20, max_open_files=100, cpu_s=7)
    result = await run(spec(work_root, "/bin/sh", "-c", "cat /proc/self/limits /proc/self/status", **limits))
    text = result.stdout_tail
    row = {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines() if line.startswith("Max ")}
    assert row["Max core file size"] == ["0", "0"]
    assert row["Max cpu time"] == ["7", "8"]
    assert row["Max address space"] == [str(300 << 20)] * 2
    assert row["Max processes"] == ["40", "40"]
    assert row["Max file size"] == [str(5 << 20)] * 2
    assert row["Max open files"] == ["100", "100"]
    assert "NoNewPrivs:\t1" in text


async def test_a_crash_leaves_no_core_file(work_root: Path) -> None:
    files = Lines()
    script = f"{PY} -I -S -c 'import os; os.abort()'; ls -a"
    result = await run(spec(work_root, "/bin/sh", "-c", script), on_output=files)
    assert result.status == "succeeded"
    assert not [name for name in files["stdout"] if name.startswith("core")]


@pytest.mark.skipif(not IS_ROOT, reason="dropping to an unprivileged user needs root")
async def test_runs_as_nobody_in_its_own_private_directory(work_root: Path) -> None:
    result = await run(spec(work_root, "/bin/sh", "-c", 'id -u; id -G; stat -c "%a %u" .; echo "$HOME $TMPDIR $PWD"'))
    uid, groups, mode, dirs = result.stdout_tail.splitlines()
    assert uid == "65534" and "0" not in groups.split()
    assert mode == "700 65534"
    home, tmp, pwd = dirs.split()
    assert home == tmp == pwd and Path(pwd).parent == work_root


@pytest.mark.skipif(not IS_ROOT, reason="RLIMIT_NPROC only means something once root is dropped")
async def test_process_limit(work_root: Path) -> None:
    code = (
        "import subprocess, sys\nprocs = []\n"
        "try:\n    for _ in range(60): procs.append(subprocess.Popen(['/bin/sleep', '5']))\n"
        "except OSError as exc: print('refused', exc.errno)\n"
        "print(len(procs))\n"
        "for p in procs: p.kill()\n"
    )
    result = await run(spec(work_root, *python(code), max_processes=10))
    assert "refused" in result.stdout_tail
    assert int(result.stdout_tail.split()[-1]) < 10


async def test_the_environment_is_an_allow_list(work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_DB_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-leak-me")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-secret@h/db")
    monkeypatch.setenv("ALLOWED_NAME", "fine")
    env = clean_environment(["ALLOWED_NAME", "NOT_SET_ANYWHERE"])
    assert set(env) == {"PATH", "LANG", "LC_ALL", "ALLOWED_NAME"}
    result = await run(RunSpec(("/usr/bin/env",), env, Limits(), work_root))
    names = {line.split("=", 1)[0] for line in result.stdout_tail.splitlines()}
    assert names <= {"PATH", "LANG", "LC_ALL", "ALLOWED_NAME", "HOME", "TMPDIR", "PWD"}
    for secret in ("hunter2-secret", "sk-leak-me", "pw-secret"):
        assert secret not in result.stdout_tail


async def test_the_work_dir_is_removed_even_when_the_task_locks_it(work_root: Path) -> None:
    script = "mkdir -p a/b && echo x > a/b/f && chmod 000 a/b a && chmod 500 . && pwd"
    result = await run(spec(work_root, "/bin/sh", "-c", script))
    assert result.status == "succeeded"
    assert result.stdout_tail.strip().startswith(str(work_root))
    assert os.listdir(work_root) == []


async def test_output_tails_are_bounded_and_totals_true(work_root: Path) -> None:
    lines = Lines()
    code = "import sys; sys.stdout.write('x' * 100000 + '\\n' + 'y' * 2000 + '\\n')"
    result = await run(spec(work_root, *python(code), max_output_bytes=1000), on_output=lines)
    assert result.stdout_bytes == 100000 + 1 + 2000 + 1
    assert result.stdout_tail == "y" * 999 + "\n"
    assert max(len(line) for line in lines["stdout"]) <= MAX_LINE_BYTES
    assert "".join(lines["stdout"][:13]) == "x" * 100000
    assert lines["stdout"][13:] == ["y" * 2000]


async def test_stdin_reaches_a_script_interpreter(work_root: Path) -> None:
    result = await run(spec(work_root, "/bin/bash", "-s", stdin=b"echo from-stdin $((6*7))\n"))
    assert result.stdout_tail == "from-stdin 42\n"


def test_plan_runs_nothing_and_shows_names_only(work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOKEN", "tok-secret-value")
    marker = work_root / "ran"
    the_spec = RunSpec(("/usr/bin/touch", str(marker)), clean_environment(["SOME_TOKEN"]), Limits(), work_root)
    shown = plan(the_spec)
    assert not os.path.exists(marker) and os.listdir(work_root) == []
    assert shown["argv"][-2:] == ["/usr/bin/touch", str(marker)]
    assert shown["argv"][:4] == [sys.executable, "-I", "-S", sandbox.LAUNCHER]
    assert shown["env"] == ["HOME", "LANG", "LC_ALL", "PATH", "SOME_TOKEN", "TMPDIR"]
    assert shown["limits"]["timeout_s"] == 300.0 and shown["mode"] == "rlimits"
    assert shown["working_directory"].startswith(str(work_root) + "/task-")
    assert "tok-secret-value" not in json.dumps(shown)


def test_an_unknown_mode_is_refused(work_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        plan(spec(work_root, "/bin/true", mode="docker"))


BWRAP = "bwrap" in sandbox.available_modes()


@pytest.mark.skipif(not BWRAP, reason="bubblewrap is not installed or cannot create namespaces here")
async def test_bwrap_has_no_network_and_a_read_only_root(work_root: Path) -> None:
    script = (
        "cat /proc/net/dev; touch /usr/goblin-x 2>/dev/null && echo root-writable; touch ok && echo dir-ok; ls -A /tmp"
    )
    result = await run(spec(work_root, "/bin/sh", "-c", script, mode="bwrap"))
    devices = [line.split(":")[0].strip() for line in result.stdout_tail.splitlines() if ":" in line]
    assert devices == ["lo"]
    assert "root-writable" not in result.stdout_tail and "dir-ok" in result.stdout_tail
    listing = await run(spec(work_root, "/bin/ls", "-A", "/tmp", mode="bwrap"))
    assert listing.stdout_tail.split() == [work_root.name]  # the host's /tmp is not there


@pytest.mark.skipif(not BWRAP, reason="bubblewrap is not installed or cannot create namespaces here")
async def test_bwrap_timeout_kills_the_tree(work_root: Path) -> None:
    lines = Lines()
    result = await run(spec(work_root, *tree(True), mode="bwrap", timeout_s=3, kill_grace_s=0.5), on_output=lines)
    assert result.status == "timed_out"
    # The pid printed is the one inside bubblewrap's PID namespace: check that nothing of it survives.
    assert os.listdir(work_root) == []
    assert not _processes_running(GRANDCHILD)


def _processes_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker.strip() in cmdline and not gone(int(entry)):
                found.append(int(entry))
    return found


async def test_a_failing_output_callback_stops_the_task(work_root: Path) -> None:
    pids: list[int] = []

    async def on_output(stream: str, line: str) -> None:
        pids.append(int(line))
        raise RuntimeError("the event store is down")

    with pytest.raises(RuntimeError, match="event store is down"):
        await run(spec(work_root, *tree(True), timeout_s=60), on_output=on_output)
    assert gone(pids[0])
    assert os.listdir(work_root) == []


EXECUTOR = """
import asyncio, sys
from pathlib import Path
from services.executor.sandbox import run
from tests.unit.executor.processes import spec
from tests.unit.executor.test_sandbox import tree

async def main():
    async def on_output(stream, line):
        print(line, flush=True)
    await run(spec(Path(sys.argv[1]), *tree(True), timeout_s=60), on_output=on_output)

asyncio.run(main())
"""


async def test_tasks_die_with_their_executor(work_root: Path) -> None:
    executor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", EXECUTOR, str(work_root), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    grandchild = int(await asyncio.wait_for(executor.stdout.readline(), 30))
    executor.kill()  # no cleanup of its own: the launcher's parent-death signal must do it
    await executor.wait()
    for _ in range(100):
        if gone(grandchild):
            break
        await asyncio.sleep(0.05)
    assert gone(grandchild)


@pytest.mark.skipif(not IS_ROOT, reason="only a dropped user can lack access to the work root")
async def test_a_work_root_the_task_user_cannot_reach_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot reach it"):
        await run(spec(tmp_path / "work", "/bin/true"))  # pytest's directories are 0700


@pytest.mark.skipif(not IS_ROOT, reason="only a dropped user can lack access to the work root")
def test_the_default_work_root_falls_back_to_one_the_task_user_can_reach(
    tmp_path: Path, work_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert taskuser.default_work_root(work_root / "tasks") == work_root / "tasks"
    monkeypatch.setattr(taskuser.tempfile, "gettempdir", lambda: str(work_root))
    fallback = taskuser.default_work_root(tmp_path / "home" / "executor")  # under pytest's 0700 dirs
    assert fallback == work_root / f"goblin-executor-{os.geteuid()}"
    assert os.stat(fallback).st_mode & 0o777 == 0o711
    os.rmdir(fallback)
    os.symlink("/etc", fallback)  # planted by someone else: never followed
    with pytest.raises(ValueError, match="refusing to use it"):
        taskuser.default_work_root(tmp_path / "home" / "executor")


def test_task_python_is_one_the_task_user_can_run() -> None:
    assert taskuser.task_can_execute(taskuser.task_python())
