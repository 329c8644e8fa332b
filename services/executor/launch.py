"""The first process of every task: it confines the task, then supervises it until every descendant is gone.

Run as ``python -I -S launch.py KEY=VALUE... -- ARGV...`` (a file path, standard library only, so it
needs neither the service's environment nor its packages; no json or re either, whose imports
would double its start-up time). The
executor starts it in a new session, so its process group is the task's.

Why a launcher rather than ``preexec_fn``: ``preexec_fn`` runs Python in a forked copy of a
multi-threaded asyncio service, which is not safe, and it cannot stay behind to supervise. This
process:

1. marks itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so any descendant that double-forks
   or calls ``setsid()`` re-parents to it rather than to init, and it can still find and kill it;
2. sets ``PR_SET_NO_NEW_PRIVS`` (inherited, and kept across execve: no setuid binary gains rights)
   and ``RLIMIT_CORE=0``;
3. forks the task, which sets its rlimits, drops to the run-as user when there is one (the launcher
   itself stays as it was, so a task running as nobody cannot kill its own supervisor), enters the
   task directory and execs the command with the clean environment it was given;
4. waits. When the task's main process ends, whatever it left behind is killed. On SIGTERM (timeout
   or cancel) every descendant gets SIGTERM, then SIGKILL after the grace period; on SIGINT or SIGHUP
   every descendant gets SIGKILL at once. SIGHUP is also its parent-death signal: if the executor
   dies, its tasks die with it rather than run on unsupervised (a restarted executor may retry them).

It exits with the task's status: its exit code, or the same signal re-raised on itself.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time

PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
EXEC_FAILED = 127
SETUP_FAILED = 126
WATCHED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _descendants(root: int) -> list[int]:
    """Every living process below ``root``, found through /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _signal_all(sig: int) -> int:
    """Send ``sig`` to every descendant; how many there were."""
    pids = _descendants(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(pids)


# Wait statuses of the children reaped so far, by pid: the task's own is among them once it ends.
REAPED: dict[int, int] = {}


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        REAPED[pid] = status


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _kill_everything() -> None:
    """SIGKILL every descendant until none is left (a SIGKILLed process cannot fork again)."""
    _reap()
    # As a subreaper, no child means no descendant at all: every orphan re-parents to us. This
    # spares the common case (a task that left nothing behind) a scan of /proc.
    if not _has_children():
        return
    for _ in range(100):
        if not _signal_all(signal.SIGKILL):
            break
        time.sleep(0.01)
        _reap()
    _reap()


def _start_task(config: dict, argv: list[str]) -> None:
    """In the forked child: confine, then exec. Never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # Python ignores these for itself; an ignored disposition would survive exec.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        cpu = int(config["cpu_s"])
        # The soft limit sends SIGXCPU (catchable); the hard one, a second later, SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "max_file_bytes")):
            value = int(config[key])
            resource.setrlimit(getattr(resource, name), (value, value))
        nofile = int(config["max_open_files"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        uid, gid = config.get("uid"), config.get("gid")
        if uid is not None:
            os.setgroups([])
            os.setgid(int(gid))
            os.setuid(int(uid))
        # After the uid change: RLIMIT_NPROC counts the processes of the real uid, and execve
        # refuses to start a process beyond it.
        nproc = int(config["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.umask(0o077)
        os.chdir(config["cwd"])
    except OSError as exc:
        os.write(2, f"goblin sandbox: cannot set up the task: {exc}\n".encode())
        os._exit(SETUP_FAILED)
    try:
        os.execve(argv[0], argv, os.environ)
    except OSError as exc:
        os.write(2, f"goblin sandbox: cannot run {argv[0]}: {exc.strerror}\n".encode())
        os._exit(EXEC_FAILED)


def _exit_like(status: int) -> None:
    """End this process the way the task ended, so the executor sees the same code or signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # the two whose action cannot be set
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default action is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))


def supervise(config: dict, argv: list[str]) -> None:
    """Start the task and wait for it and every descendant; see the module docstring."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != int(config.get("parent", os.getppid())):
        os._exit(SETUP_FAILED)  # the executor died before the line above: nobody would supervise us
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    main = os.fork()
    if main == 0:
        _start_task(config, argv)
    grace = float(config.get("kill_grace_s", 2.0))
    kill_at: float | None = None  # set by SIGTERM (after the grace) or SIGINT/SIGHUP (now)
    killed = False
    while main not in REAPED:
        if kill_at is not None and not killed and time.monotonic() >= kill_at:
            _kill_everything()
            killed = True
            continue
        if kill_at is None or killed:
            info = signal.sigwaitinfo(WATCHED)  # SIGCHLD comes once the SIGKILLed task has died
        else:
            info = signal.sigtimedwait(WATCHED, max(0.0, kill_at - time.monotonic()))
        if info is not None and info.si_signo in (signal.SIGINT, signal.SIGHUP):
            kill_at, killed = time.monotonic(), False
        elif info is not None and info.si_signo == signal.SIGTERM and kill_at is None:
            _signal_all(signal.SIGTERM)
            kill_at = time.monotonic() + grace
        _reap()
    _kill_everything()
    _exit_like(REAPED[main])


def main() -> None:
    args = sys.argv[1:]
    if "--" not in args or args.index("--") == len(args) - 1:
        sys.stderr.write("usage: launch.py KEY=VALUE... -- ARGV...\n")
        sys.exit(2)
    split = args.index("--")
    config = dict(item.split("=", 1) for item in args[:split])
    supervise({key: value for key, value in config.items() if value != ""}, args[split + 1 :])


if __name__ == "__main__":
    main()
