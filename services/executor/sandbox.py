"""Run one command confined: its own session and process group, rlimits, no_new_privs, a clean
environment, an unprivileged user when the service is root, its own temporary directory, and
optionally bubblewrap (no network, read-only root).

The confinement itself happens in :mod:`services.executor.launch`, a small launcher every task starts
under (see its docstring for why a launcher rather than ``preexec_fn``). This module builds the
launcher's command line, streams the output, enforces the wall clock and cancellation, and cleans up.

What is not covered: without bubblewrap, a task that runs as the same uid as the executor (the
executor is not root) can kill its launcher, and anything it had moved out of the process group with
``setsid()`` then escapes the launcher's sweep (the process-group kill still reaches the rest). By
default all tasks run as the same unprivileged uid, so RLIMIT_NPROC is shared between concurrent
tasks, and without bubblewrap's PID namespace one task can see and signal another
(``GOBLIN_EXECUTOR_RUN_AS_RANGE`` gives each its own uid; see taskuser.py). Network access is only
removed in bubblewrap mode (on Kubernetes the executor pods' NetworkPolicy does it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.executor import prefork
from services.executor.limits import Limits
from services.executor.prefork import LaunchedTask
from services.executor.taskuser import (
    SAFE_PATH,
    TASK_DIR_PREFIX,
    make_task_dir,
    remove_task_dir,
    run_as,
    run_as_range,
    task_user,
)

LAUNCHER = str(Path(__file__).with_name("launch.py"))
MAX_LINE_BYTES = 8192  # longer lines reach on_output in pieces
MODES = ("rlimits", "bwrap")
# After SIGKILL, how long the output pipes may stay open (only an escaped process could hold them).
DRAIN_AFTER_KILL_S = 2.0
# After the grace, how long the launcher has to sweep before the whole group gets SIGKILL from here.
LAUNCHER_MARGIN_S = 2.0

OutputCallback = Callable[[str, str], Awaitable[None]]
StartCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class RunSpec:
    """What to run and how. ``env`` is final (see :func:`clean_environment`); HOME and TMPDIR are added."""

    argv: tuple[str, ...]
    env: dict[str, str]
    limits: Limits
    work_root: Path  # a per-task temp dir is created INSIDE it and removed afterwards
    mode: str = "rlimits"  # "rlimits" | "bwrap"
    stdin: bytes | None = None  # a script's source reaches its interpreter on stdin
    network: bool = False  # bwrap mode only: keep the host network (a goblin that must call the suite)


@dataclass(frozen=True)
class RunResult:
    status: str  # succeeded | failed | timed_out | cancelled
    exit_code: int | None
    signal: int | None
    stdout_tail: str
    stderr_tail: str
    stdout_bytes: int
    stderr_bytes: int
    duration_s: float
    error: str | None


def clean_environment(allowed_names: Iterable[str] = (), source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a task: a fixed PATH and locale, plus the named variables found in ``source``
    (default ``os.environ``). Nothing else of the service's environment gets through."""
    source = os.environ if source is None else source
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    for name in allowed_names:
        if name in source and name not in env:
            env[name] = source[name]
    return env


def _bwrap_argv(task_dir: str, network: bool) -> list[str]:
    argv = [shutil.which("bwrap") or "/usr/bin/bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        argv.append("--share-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    argv += ["--bind", task_dir, task_dir, "--chdir", task_dir, "--"]
    return argv


def _launch_config(
    spec: RunSpec, task_dir: str, user: tuple[int, int] | None, report_fd: int | None = None
) -> tuple[dict[str, object], list[str]]:
    """The launcher's settings and the argv it runs ((bwrap and) the task's). ``report_fd``: the
    descriptor the launcher writes its reasons to (see :func:`run`)."""
    if spec.mode not in MODES:
        raise ValueError(f"unknown sandbox mode {spec.mode!r} (expected one of {', '.join(MODES)})")
    if not spec.argv:
        raise ValueError("argv is empty")
    limits = spec.limits
    config = {
        "cwd": task_dir,
        "cpu_s": limits.cpu_s,
        "memory_bytes": limits.memory_bytes,
        "max_processes": limits.max_processes,
        "max_file_bytes": limits.max_file_bytes,
        "max_open_files": limits.max_open_files,
        "kill_grace_s": limits.kill_grace_s,
        "uid": user[0] if user else None,
        "gid": user[1] if user else None,
        "parent": os.getpid(),
        "report": report_fd,
    }
    return config, [*(_bwrap_argv(task_dir, spec.network) if spec.mode == "bwrap" else []), *spec.argv]


def _command(spec: RunSpec, task_dir: str, user: tuple[int, int] | None, report_fd: int | None = None) -> list[str]:
    """The launcher as a command line of its own: its configuration, then (bwrap and) the task's argv.
    Tasks are started by the zygote, which runs the same launcher with the same settings in a fork of
    itself (prefork.py); this form is the bwrap probe's and the dry-run plan's."""
    config, wrapped = _launch_config(spec, task_dir, user, report_fd)
    settings = [f"{key}={'' if value is None else value}" for key, value in config.items()]
    return [sys.executable, "-I", "-S", LAUNCHER, *settings, "--", *wrapped]


def _task_env(spec: RunSpec, task_dir: str) -> dict[str, str]:
    return {**spec.env, "HOME": task_dir, "TMPDIR": task_dir}


def plan(spec: RunSpec) -> dict:
    """Exactly what :func:`run` would start, and runs nothing: the command line (launcher and any
    bubblewrap wrapping included), the environment's names (never its values), the limits, the
    working-directory pattern, the mode and the user."""
    task_dir = str(Path(spec.work_root) / f"{TASK_DIR_PREFIX}XXXXXXXX")
    user = run_as()
    return {
        "mode": spec.mode,
        "argv": _command(spec, task_dir, user),
        "env": sorted(_task_env(spec, task_dir)),
        "limits": dataclasses.asdict(spec.limits),
        "working_directory": task_dir,
        "working_directory_note": "created 0700 for the task's user, removed when the task ends",
        "run_as_uid": user[0] if user else os.geteuid(),
        # With GOBLIN_EXECUTOR_RUN_AS_RANGE each run takes a free uid of the range instead.
        "run_as_uid_range": list(run_as_range() or ()) or None,
        "network": spec.mode != "bwrap" or spec.network,
        "stdin_bytes": len(spec.stdin) if spec.stdin is not None else 0,
    }


class _Stream:
    """One output stream: lines to the callback in order, a bounded tail, the true total."""

    def __init__(self, name: str, keep: int, on_output: OutputCallback | None) -> None:
        self.name, self.keep, self.on_output = name, keep, on_output
        self.tail = bytearray()
        self.total = 0
        self._partial = bytearray()

    async def pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.total += len(chunk)
            self.tail += chunk
            if len(self.tail) > self.keep:
                del self.tail[: len(self.tail) - self.keep]
            if self.on_output is not None:
                await self._lines(chunk)
        if self.on_output is not None and self._partial:
            await self._emit(bytes(self._partial))
            self._partial.clear()

    async def _lines(self, chunk: bytes) -> None:
        self._partial += chunk
        while True:
            end = self._partial.find(b"\n")
            if end < 0 or end > MAX_LINE_BYTES:
                if len(self._partial) < MAX_LINE_BYTES:
                    return
                end = MAX_LINE_BYTES
                line, rest = self._partial[:end], self._partial[end:]
            else:
                line, rest = self._partial[:end], self._partial[end + 1 :]
            self._partial = bytearray(rest)
            await self._emit(bytes(line))

    async def _emit(self, line: bytes) -> None:
        await self.on_output(self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")


def _describe(status: str, code: int | None, sig: int | None, limits: Limits) -> str | None:
    if status == "timed_out":
        return f"timed out after {limits.timeout_s:g} s"
    if status == "cancelled":
        return "cancelled"
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        hint = {
            signal.SIGXCPU: " (CPU time limit)",
            signal.SIGKILL: " (CPU or memory limit?)",
            signal.SIGXFSZ: " (file size limit)",
        }.get(sig, "")
        return f"killed by {name}{hint}"
    if code:
        return f"exited with code {code}"
    return None


async def run(
    spec: RunSpec,
    *,
    on_output: OutputCallback | None = None,
    cancel: asyncio.Event | None = None,
    on_start: StartCallback | None = None,
) -> RunResult:
    """Run ``spec`` to its end, its timeout or ``cancel``; see the module docstring for the confinement.

    ``on_output(stream, line)`` gets each line (bounded to MAX_LINE_BYTES) in order per stream;
    ``on_start(pid)`` the launcher's pid, which is also the task's process group and session id.
    Timeout and cancel send SIGTERM to the whole group (the launcher passes it to every descendant,
    escaped ones included), then SIGKILL after ``limits.kill_grace_s``. The task directory is removed
    whatever happens."""
    # The probe runs once per process, in a thread; afterwards its answer is read without one (a
    # thread hop per task start costs a few ms on a busy machine).
    if spec.mode == "bwrap" and _probe_modes.cache_info().currsize:
        modes = available_modes()
    elif spec.mode == "bwrap":
        modes = await asyncio.to_thread(available_modes)
    else:
        modes = MODES
    if "bwrap" not in modes:
        raise ValueError("sandbox mode 'bwrap' is not available here (see available_modes())")
    started = time.monotonic()
    with task_user(spec.work_root) as user:
        return await _run_as(spec, user, started, on_output, cancel, on_start)


async def _run_as(
    spec: RunSpec,
    user: tuple[int, int] | None,
    started: float,
    on_output: OutputCallback | None,
    cancel: asyncio.Event | None,
    on_start: StartCallback | None,
) -> RunResult:
    task_dir = make_task_dir(spec.work_root, user)
    # The launcher's reasons (why a task ended before it ran) come on a pipe of their own: the task's
    # output cannot forge them, and they survive a task that floods or closes its stderr.
    report_read, report_write = os.pipe()
    try:
        try:
            config, argv = _launch_config(spec, task_dir, user, report_write)
            try:
                proc = await prefork.launch(config, argv, env=_task_env(spec, task_dir), cwd=task_dir, stdin=spec.stdin)
            except OSError as exc:  # no process at all (EAGAIN, ENOMEM...): the task failed, and says why
                elapsed = time.monotonic() - started
                return RunResult("failed", None, None, "", "", 0, 0, elapsed, f"cannot start it: {exc}")
        finally:
            os.close(report_write)  # ours, the one owner: the launcher got its own copy (or nothing started)
        try:
            return await _supervise(proc, spec, started, on_output, cancel, on_start, report_read)
        finally:
            # Whatever happened above (on_output failing, our own cancellation), nothing of the task
            # outlives run(): SIGINT makes the launcher SIGKILL every descendant at once.
            try:
                if not proc.ended:
                    await _kill_now(proc)
            finally:
                proc.close_pipes()  # output a descendant kept open, or that nobody read to its end
    finally:
        os.close(report_read)
        await asyncio.to_thread(remove_task_dir, task_dir)


async def _supervise(
    proc: LaunchedTask,
    spec: RunSpec,
    started: float,
    on_output: OutputCallback | None,
    cancel: asyncio.Event | None,
    on_start: StartCallback | None,
    report_fd: int,
) -> RunResult:
    limits = spec.limits
    out = _Stream("stdout", limits.max_output_bytes, on_output)
    err = _Stream("stderr", limits.max_output_bytes, on_output)
    pumps = [asyncio.create_task(out.pump(proc.stdout)), asyncio.create_task(err.pump(proc.stderr))]
    if on_start is not None:
        await on_start(proc.pid)
    finished = asyncio.create_task(_finish(proc, pumps))
    waiters = [finished]
    cancelled_wait = asyncio.create_task(cancel.wait()) if cancel is not None else None
    if cancelled_wait is not None:
        waiters.append(cancelled_wait)
    outcome = None
    try:
        done, _ = await asyncio.wait(waiters, timeout=limits.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if finished in done and finished.exception() is not None:
            raise finished.exception()  # on_output failed: run()'s cleanup stops the task
        if finished not in done:
            outcome = "cancelled" if cancelled_wait is not None and cancelled_wait in done else "timed_out"
            await _terminate(proc, limits.kill_grace_s)
            try:
                await asyncio.wait_for(asyncio.shield(finished), DRAIN_AFTER_KILL_S)
            except TimeoutError:
                for task in pumps:
                    task.cancel()
                await proc.wait()
    finally:
        if cancelled_wait is not None:
            cancelled_wait.cancel()
        if not finished.done():
            finished.cancel()
    code = proc.returncode
    sig = -code if code is not None and code < 0 else None
    exit_code = code if code is not None and code >= 0 else None
    status = outcome or ("succeeded" if code == 0 else "failed")
    return RunResult(
        status=status,
        exit_code=exit_code,
        signal=sig,
        stdout_tail=out.text(),
        stderr_tail=err.text(),
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        duration_s=time.monotonic() - started,
        error=_with_report(_describe(status, exit_code, sig, limits), status, _read_report(report_fd, proc.lost), code),
    )


def _read_report(fd: int, lost: str | None = None) -> list[str]:
    """The launcher's lines (it has exited: its end of the pipe is closed, so this cannot block long),
    and ``lost``, the reason its zygote gave when it died before it could report the launcher's end."""
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()] + ([lost] if lost else [])


def _with_report(reason: str | None, status: str, lines: list[str], code: int | None) -> str | None:
    """The reason, with what the launcher said about a task that did not end on its own terms."""
    if "started" not in lines and code is not None and code < 0:
        # The launcher never ran a line of its own: it died between its spawn and its first line.
        lines = [*lines, "the launcher died before it started"]
    said = [line for line in lines if line != "started"]
    if not said or status != "failed":  # a timeout or cancel says so already; the kill is ours
        return reason
    return "; ".join(filter(None, [reason, *said]))


async def _kill_now(proc: LaunchedTask) -> None:
    proc.signal_group(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), DRAIN_AFTER_KILL_S)
    except TimeoutError:
        proc.signal_group(signal.SIGKILL)
        await proc.wait()


async def _finish(proc: LaunchedTask, pumps: list[asyncio.Task]) -> None:
    """The process has ended and its output is read to the end (an on_output error ends it early)."""
    await asyncio.gather(*pumps)
    await proc.wait()


async def _terminate(proc: LaunchedTask, grace: float) -> None:
    """SIGTERM to the group (the launcher forwards it to escaped descendants), SIGKILL after ``grace``."""
    proc.signal_group(signal.SIGTERM)
    try:
        # The launcher itself SIGKILLs the stragglers at the end of the grace; give it time to.
        await asyncio.wait_for(proc.wait(), grace + LAUNCHER_MARGIN_S)
    except TimeoutError:
        proc.signal_group(signal.SIGKILL)
        await proc.wait()


def available_modes() -> list[str]:
    """ "rlimits" always; "bwrap" when bubblewrap is installed and a probe run through the real launcher
    (as the real run-as user, no network, read-only root) succeeds here. Probed once per process."""
    return list(_probe_modes())


@functools.cache
def _probe_modes() -> tuple[str, ...]:
    modes = ["rlimits"]
    if shutil.which("bwrap") is None:
        return tuple(modes)
    with tempfile.TemporaryDirectory(prefix="goblin-bwrap-probe-") as root:
        os.chmod(root, 0o711)
        user = run_as()
        task_dir = make_task_dir(Path(root), user)
        spec = RunSpec(("/bin/true",), clean_environment(), Limits(), Path(root), mode="bwrap")
        try:
            probe = subprocess.run(
                _command(spec, task_dir, user),
                env=_task_env(spec, task_dir),
                cwd=task_dir,
                capture_output=True,
                timeout=10,
                start_new_session=True,
            )
            if probe.returncode == 0:
                modes.append("bwrap")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return tuple(modes)
