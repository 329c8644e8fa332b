"""The executor's pre-forked launcher ("zygote"): one long-lived process per executor, already past
its imports, that forks a task's launcher on request. A new Python interpreter per task (``python -I
-S launch.py``) was most of a task's start (about 15 to 27 ms of its ~45 ms, bench/RESULTS.md); a
fork of this small process takes about a millisecond.

Run as ``python -I -S zygote.py PARENT_PID SOCKET_FD`` (a file path, standard library only, like
launch.py), started once through spawn.py's ``vfork`` path (never a ``fork()`` of the gRPC executor)
with the tasks' clean environment, in a session of its own. ``prefork.py`` is the executor's side.

The protocol, one JSON object per datagram on a ``SOCK_SEQPACKET`` socketpair:

- the executor sends ``{"op": "run", "id": N, "config": {...}, "argv": [...], "env": {...}, "cwd": ...}``
  (when that is larger than a datagram may be, ``{"memfd": true}`` and the request in a memory file,
  a fifth descriptor) with four descriptors (the task's stdin, stdout and stderr, and the launcher's report pipe); the
  zygote forks a child that ``setsid()``s, takes them as 0, 1, 2 and ``report``, enters ``cwd`` and
  runs exactly launch.py's :func:`launch.supervise` (subreaper, no_new_privs, rlimits, the run-as
  user drop in the task's own process, supervision, orphan handling). It answers ``{"op": "started",
  "id": N, "pid": P}`` (or ``{"op": "failed", "id": N, "error": ...}`` when the fork failed);
- when a launcher ends, the zygote reaps it and sends ``{"op": "exited", "pid": P, "status": S}`` (the
  raw wait status);
- ``{"op": "kill", "pid": P, "sig": S}`` signals that launcher's process group, and only while the
  zygote has not reaped it: a timeout or cancel can never hit a recycled pid.

It never outlives its executor: ``PR_SET_PDEATHSIG`` (SIGKILL), end of file on the socket, and a
``getppid()`` check every second each end it. Its launchers' parent is then gone, and they stop
their tasks exactly as they do when a directly started launcher loses its executor (SIGTERM, SIGKILL
after the grace). If the zygote dies while the executor lives, the same happens to the tasks it was
running (the executor records why) and the executor starts a new zygote for the next task.

It holds nothing a task could use: it runs as the executor's user with the tasks' clean environment,
and its socket and wake-up pipe are closed in every launcher before anything else happens there.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # launch.py, beside this file
import launch  # noqa: E402

PR_SET_NAME = 15
CHECK_MS = 1000  # how often, at most, the parent is checked while nothing happens
MAX_MESSAGE = 256 << 10  # at least the executor's send buffer, which bounds its requests
FDS = 4  # stdin, stdout, stderr, report


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the executor is gone: the loop sees the end of file and exits


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _launcher(request: dict, fds: list[int], own_fds: list[int], zygote: int) -> None:
    """In the forked child: become the task's launcher. Never returns."""
    try:
        os.setsid()  # its own session and process group, whose id is its pid: the task's group
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The zygote's socket and wake-up pipe (never within a task's reach), and the pipe whose end
        # tells the zygote the session exists.
        _close_all(own_fds)
        launch._prctl(PR_SET_NAME, b"goblin-launch")
        stdin, stdout, stderr, report = fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)  # inheritable: the task gets them
        _close_all([stdin, stdout, stderr])
        os.chdir(request["cwd"])
        config = {key: str(value) for key, value in request["config"].items() if value not in (None, "")}
        config.update(report=str(report), parent=str(zygote))
        launch.supervise(config, [str(item) for item in request["argv"]], dict(request["env"]))
    except BaseException as exc:  # a bad request or a failed setup: say so, and never return to the loop
        try:
            os.write(2, f"goblin sandbox: the launcher could not start: {exc!r}\n".encode())
        except OSError:
            pass
    os._exit(launch.SETUP_FAILED)


def _start(sock: socket.socket, data: bytes, fds: list[int], own_fds: list[int], live: set[int]) -> None:
    try:
        request = json.loads(data)
        if request.get("op") == "kill":
            _close_all(fds)
            _kill(int(request["pid"]), int(request["sig"]), live)
            return
        if request.get("memfd") and fds:
            # A request too large for one datagram came as a memory file, the last descriptor.
            request = json.loads(_read_file(fds.pop()))
        request_id = request["id"]
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        _close_all(fds)
        return  # not from our executor's code: nothing to answer to
    if len(fds) != FDS:
        _close_all(fds)
        _send(sock, {"op": "failed", "id": request_id, "error": f"expected {FDS} descriptors, got {len(fds)}"})
        return
    zygote = os.getpid()  # taken before the fork: in the child, getppid() may already be init's
    # The child closes its end once it has its own session: only then is the pid the executor gets
    # also a process group (a kill sent at once reaches the group, and getpgid(pid) == pid).
    ready_read, ready_write = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        _close_all([*fds, ready_read, ready_write])
        _send(sock, {"op": "failed", "id": request_id, "error": str(exc)})
        return
    if pid == 0:
        os.close(ready_read)
        _launcher(request, fds, [*own_fds, ready_write], zygote)
    _close_all([*fds, ready_write])
    try:
        os.read(ready_read, 1)  # end of file: the child's setsid() is done (or it died)
    finally:
        os.close(ready_read)
    live.add(pid)
    _send(sock, {"op": "started", "id": request_id, "pid": pid})


def _read_file(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _kill(pid: int, sig: int, live: set[int]) -> None:
    """Signal a launcher's process group, only while it is unreaped (its pid cannot have been recycled)."""
    if pid not in live:
        return
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        # Between the fork and the child's setsid() its group does not exist yet: the launcher alone.
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    except PermissionError:
        pass


def _reap(sock: socket.socket, live: set[int]) -> None:
    while live and (ended := launch.reap_one()) is not None:
        pid, status = ended
        live.discard(pid)
        _send(sock, {"op": "exited", "pid": pid, "status": status})


def serve(parent: int, sock: socket.socket) -> None:
    """Answer the executor's requests until it goes away; see the module docstring."""
    wake_read, wake_write = os.pipe()  # SIGCHLD wakes the poll through this pipe
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    own_fds = [sock.fileno(), wake_read, wake_write]
    live: set[int] = set()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    while os.getppid() == parent:
        for fd, _ in poller.poll(CHECK_MS):
            if fd == wake_read:
                try:
                    while os.read(wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            try:
                data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS + 1, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data and not fds:
                return  # end of file: the executor closed its end or died
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_all(fds)
                continue
            _start(sock, data, fds, own_fds, live)
        _reap(sock, live)


def main() -> None:
    parent, fd = int(sys.argv[1]), int(sys.argv[2])
    launch._prctl(launch.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)  # the executor died before the line above
    launch._prctl(PR_SET_NAME, b"goblin-zygote")
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    # What is allocated now is shared with every fork: out of the collector's reach, a collection in a
    # launcher does not write to (and so copy) those pages.
    gc.freeze()
    serve(parent, sock)
    os._exit(0)


if __name__ == "__main__":
    main()
