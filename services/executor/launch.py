"""The first process of every task: it confines the task, then supervises it until every descendant is gone.

The executor's zygote (zygote.py) forks it per task, in a new session (its process group is the
task's), and calls :func:`supervise`; it also runs on its own as ``python -I -S launch.py KEY=VALUE...
-- ARGV...`` (the bwrap probe; what a dry run shows). Standard library only, so it needs neither the
service's environment nor its packages.

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
   or cancel) every descendant gets SIGTERM, then SIGKILL after the grace period; on SIGINT every
   descendant gets SIGKILL at once.
5. never outlives its executor: SIGHUP is its parent-death signal, and it also checks ``getppid()``
   at least every second (a parent-death signal is lost if the parent dies before it is set, and
   is tied to the parent's thread). Once orphaned it treats it as SIGTERM: SIGTERM to every
   descendant, SIGKILL after the grace, and it exits at most GIVE_UP_S later whatever is left (a
   process stuck in the kernel cannot hold it). Every wait blocks, with a timeout of at least
   MIN_WAIT_S: it never spins (an earlier version lost the task's status in its sweep and then
   looped on a zero timeout, at 12 % CPU, for hours after its executor was killed).

Why a task ended before it ran is written to the ``report`` descriptor, which the executor reads
into the task's reason: a failed fork, a setup or exec error, or the signal that killed the task's
first process and whether that was before its exec. The task cannot write there (it is close-on-exec).

It exits with the task's status: its exit code, or the same signal re-raised on itself.
"""

from __future__ import annotations

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
GAVE_UP = 125  # the task's first process did not end even after SIGKILL (stuck in the kernel)
WATCHED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CHECK_S = 1.0  # how often, at most, the parent is checked while nothing happens
MIN_WAIT_S = 0.01  # the shortest wait: no loop iteration can be a busy one
GIVE_UP_S = 5.0  # after the final SIGKILL, how long the first process may take to be reaped

PARENT_DIED = "the executor (or its zygote) died: the task is stopped (SIGTERM, then SIGKILL after the grace)"

# Where the reasons go (the executor's ``report`` pipe); -1 when there is none.
REPORT_FD = -1


def _prctl(option: int, value: int) -> None:
    # Through ctypes' C core (``_ctypes``) rather than ``ctypes``: the package's import costs about
    # 4 ms of CPU per task start (a quarter of the launcher's start-up), for one libc call.
    try:
        import _ctypes

        result = _ctypes.call_function(_ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl"), (option, value, 0, 0, 0))
    except (ImportError, AttributeError):  # another Python: the public way
        import ctypes

        result = ctypes.CDLL(None).prctl(option, value, 0, 0, 0)
    if result != 0:
        raise OSError(f"prctl({option}, {value}) failed")


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


def reap_one() -> tuple[int, int] | None:
    """One child that has ended, reaped: its pid and wait status; None when none has (never blocks)."""
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    return (pid, status) if pid else None


def _reap() -> None:
    while (ended := reap_one()) is not None:
        REAPED[ended[0]] = ended[1]


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


def report(text: str) -> None:
    """One line for the executor (the task's reason); nothing when there is no report pipe."""
    if REPORT_FD >= 0:
        try:
            os.write(REPORT_FD, (text.replace("\n", " ") + "\n").encode())
        except OSError:
            pass  # the executor is gone: nobody to tell


def _start_task(config: dict, argv: list[str], env, status_fd: int) -> None:
    """In the forked child: confine, then exec. Never returns. ``status_fd`` (close-on-exec) gets
    "x" just before the exec, then the error if there is one: the launcher learns how far it got."""
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
        message = f"goblin sandbox: cannot set up the task: {exc}"
        os.write(2, f"{message}\n".encode())
        _tell(status_fd, message)
        os._exit(SETUP_FAILED)
    _tell(status_fd, "x")
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:
        message = f"goblin sandbox: cannot run {argv[0]}: {exc.strerror}"
        os.write(2, f"{message}\n".encode())
        _tell(status_fd, message)
        os._exit(EXEC_FAILED)


def _tell(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _read_all(fd: int) -> str:
    """What the task's first process told the launcher before it exec'd or failed (its writer is
    gone by now: exec or exit closed it)."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks).decode("utf-8", "replace")


def _explain(status: int, progress: str, lived_s: float) -> None:
    """Report why the task's first process ended, when that is not its program's own exit."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        where = "after its exec" if progress.startswith("x") else "before its exec (while it was being confined)"
        report(f"the task's first process was killed by {name} {lived_s * 1000:.0f} ms after it started, {where}")
    elif progress and progress != "x":
        report(progress[1:] if progress.startswith("x") else progress)


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


class Supervisor:
    """The waiting loop: signals, the kill deadlines, and the parent check; see the module docstring."""

    def __init__(self, main: int, parent: int, grace: float) -> None:
        self.main, self.parent, self.grace = main, parent, grace
        self.kill_at: float | None = None  # SIGKILL for everything, from then on
        self.killed = False
        self.give_up_at: float | None = None  # exit even if the first process is not reaped

    def terminate(self, why: str = "") -> None:
        """SIGTERM to every descendant now, SIGKILL after the grace (once: a repeat changes nothing)."""
        if self.kill_at is None:
            if why:
                report(why)
            _signal_all(signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace

    def kill_now(self) -> None:
        self.kill_at, self.killed = time.monotonic(), False

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def run(self) -> bool:
        """Wait until the first process is reaped (True), or give up after the final SIGKILL (False)."""
        while self.main not in REAPED:
            now = time.monotonic()
            if self.kill_at is None and self.orphaned():
                self.terminate(PARENT_DIED)
                continue
            if self.kill_at is not None and not self.killed and now >= self.kill_at:
                _kill_everything()
                self.killed = True
                self.give_up_at = time.monotonic() + GIVE_UP_S
                continue
            if self.give_up_at is not None and now >= self.give_up_at:
                return False
            deadlines = [CHECK_S]
            if self.kill_at is not None and not self.killed:
                deadlines.append(self.kill_at - now)
            if self.give_up_at is not None:
                deadlines.append(self.give_up_at - now)
            info = signal.sigtimedwait(WATCHED, max(MIN_WAIT_S, min(deadlines)))
            if info is not None:
                if info.si_signo == signal.SIGINT:
                    self.kill_now()
                elif info.si_signo == signal.SIGTERM:
                    self.terminate()
                elif info.si_signo == signal.SIGHUP:  # the parent-death signal (or a hang-up: the same)
                    self.terminate(PARENT_DIED)
            _reap()
        return True


def supervise(config: dict, argv: list[str], env=None) -> None:
    """Start the task with ``env`` (default: this process's environment) and wait for it and every
    descendant; see the module docstring. Never returns."""
    global REPORT_FD
    if "report" in config:
        REPORT_FD = int(config["report"])
        os.set_inheritable(REPORT_FD, False)  # the task must not write the executor's reasons
    report("started")
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    parent = int(config.get("parent", os.getppid()))
    if os.getppid() != parent:
        report("the executor (or its zygote) died before the task started")
        os._exit(SETUP_FAILED)  # the executor died before the line above: nobody would supervise us
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    status_read, status_write = os.pipe()  # both close-on-exec
    try:
        main = os.fork()
    except OSError as exc:
        report(f"cannot start the task's process: {exc}")
        os.write(2, f"goblin sandbox: cannot start the task's process: {exc}\n".encode())
        os._exit(SETUP_FAILED)
    if main == 0:
        os.close(status_read)
        _start_task(config, argv, os.environ if env is None else env, status_write)
    os.close(status_write)
    forked_at = time.monotonic()
    supervisor = Supervisor(main, parent, float(config.get("kill_grace_s", 2.0)))
    try:
        ended = supervisor.run()
    except BaseException as exc:  # whatever went wrong here, nothing of the task may outlive us
        report(f"the launcher failed: {exc!r}; every task process is killed")
        _kill_everything()
        os._exit(SETUP_FAILED)
    lived_s = time.monotonic() - forked_at
    _kill_everything()
    if not ended:
        report(f"the task's first process did not end within {GIVE_UP_S:g} s of SIGKILL; the launcher gave up on it")
        os._exit(GAVE_UP)
    status = REAPED[main]
    _explain(status, _read_all(status_read), lived_s)
    _exit_like(status)


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
