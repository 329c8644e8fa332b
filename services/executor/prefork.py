"""The executor's side of the zygote (zygote.py): start it once, hand it tasks, learn their pids and
how they ended, route kills through it.

One zygote per event loop (the executor has one). It is started through ``subprocess.Popen`` (vfork,
see spawn.py: never a ``fork()`` of the gRPC executor) from the loop's thread, whose end would be its
parent-death signal, with the tasks' clean environment. When it dies (killed, crashed) every task it
was running ends as "lost" (its launcher, orphaned, stops it: the reason says so), and the next task
starts a new zygote. A request that could not even be delivered to a dead zygote goes to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.executor import pipes as task_pipes
from services.executor import spawn
from services.executor.taskuser import SAFE_PATH

ZYGOTE = str(Path(__file__).with_name("zygote.py"))
# The zygote's own environment: nothing of the service's (no secrets), what a task would get.
ZYGOTE_ENV = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
START_TIMEOUT_S = 30.0  # a fork and an answer take milliseconds; this long means the zygote is stuck
INLINE_MAX = 64 << 10  # a run request up to this size travels in the datagram itself
LOST = "the executor's zygote died while the task ran: its launcher stopped the task"


class ZygoteGone(OSError):
    """The zygote was dead before it got the request (nothing of the task ran)."""


class LaunchedTask:
    """A launcher forked by the zygote: its pid (also its process group and session), its output as
    stream readers, ``wait()`` for its end, ``signal_group()``, and ``close_pipes()``, which its runner
    calls once it is done with them (pipes.py: each descriptor is closed once, by its transport).

    ``returncode`` is None while it runs, then its exit code or minus the signal that ended it; it
    stays None when the zygote died first (``lost`` then says so: its exit status went to init)."""

    def __init__(self, zygote: Zygote, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        self._zygote = zygote
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self.lost: str | None = None
        self._ended = asyncio.get_running_loop().create_future()
        self._pipes: list[task_pipes.PipeReader | task_pipes.PipeFeeder] = []

    def close_pipes(self) -> None:
        """Close what is left of its pipes (output not read to its end, stdin not all written)."""
        for pipe in self._pipes:
            pipe.close()

    @property
    def ended(self) -> bool:
        return self._ended.done()

    async def wait(self) -> int | None:
        """Until the zygote reaped it (or died)."""
        await asyncio.shield(self._ended)
        return self.returncode

    def signal_group(self, sig: int) -> None:
        """``sig`` to its process group, through the zygote, which only signals a launcher it has not
        reaped: never a recycled pid. Nothing once it ended (or its zygote died: it stops itself)."""
        if not self.ended:
            self._zygote.kill(self.pid, sig)

    def _end(self, returncode: int | None, lost: str | None = None) -> None:
        if not self._ended.done():
            self.returncode, self.lost = returncode, lost
            self._ended.set_result(None)


class Zygote:
    """One running zygote and the conversation with it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = spawn.start(
                [sys.executable, "-I", "-S", ZYGOTE, str(os.getpid()), str(theirs.fileno())],
                env=ZYGOTE_ENV,
                cwd="/",
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.alive = True
        self._next_id = 0
        self._starting: dict[int, asyncio.Future] = {}
        self._running: dict[int, LaunchedTask] = {}
        self._exited: dict[int, int] = {}  # an end that arrived before its task object existed
        self._abandoned: set[int] = set()  # launchers killed because their caller went away
        self._pending: set[asyncio.Task] = set()  # kills waiting for room in the socket's buffer
        self._writable: asyncio.Future | None = None
        self.loop.add_reader(ours.fileno(), self._readable)

    def send(self, message: dict | bytes, fds: Sequence[int] = ()) -> None:
        """One request (a dict, or one encoded already); ZygoteGone when the zygote is dead. A full
        socket buffer (a zygote that stopped reading) is an error too, never a wait that blocks the
        event loop."""
        if not self.alive:
            raise ZygoteGone("the zygote is gone")
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        try:
            socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._died()
            raise ZygoteGone(f"the zygote is gone: {exc}") from None

    async def _send_waiting(self, message: dict | bytes, fds: Sequence[int] = ()) -> None:
        """:meth:`send`, waiting (on the event loop) while the socket's buffer is full: a burst of
        starts larger than it (GOBLIN_EXECUTOR_CONCURRENCY may be 64) waits for the zygote to read."""
        while True:
            try:
                self.send(message, fds)
                return
            except BlockingIOError:
                with contextlib.suppress(TimeoutError):  # and try again at least every second
                    await asyncio.wait_for(asyncio.shield(self._room()), 1.0)

    def _room(self) -> asyncio.Future:
        """Done when the socket is writable again (one writer callback for every waiter)."""
        if self._writable is None or self._writable.done():
            writable = self._writable = self.loop.create_future()
            fd = self.sock.fileno()

            def ready() -> None:
                self.loop.remove_writer(fd)
                if not writable.done():
                    writable.set_result(None)

            self.loop.add_writer(fd, ready)
        return self._writable

    async def _send_run(self, message: dict, fds: list[int]) -> None:
        """A run request; one larger than a datagram may be (a long argv: the kernel allows megabytes,
        the socket a few hundred kilobytes) goes in a memory file passed beside the pipes."""
        encoded = json.dumps(message).encode()
        if len(encoded) <= INLINE_MAX:
            await self._send_waiting(encoded, fds)
            return
        memfd = os.memfd_create("goblin-task-request", os.MFD_CLOEXEC)
        try:
            data = memoryview(encoded)
            while data:
                data = data[os.write(memfd, data) :]
            os.lseek(memfd, 0, os.SEEK_SET)
            await self._send_waiting({"op": "run", "memfd": True}, [*fds, memfd])
        finally:
            os.close(memfd)

    async def launch(
        self, config: Mapping[str, object], argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes | None
    ) -> LaunchedTask:
        """Fork a launcher running ``argv`` with ``config`` (launch.py's settings), ``env`` and ``cwd``;
        its stdout and stderr come back as readers, ``stdin`` (when given) is written to it, then closed.
        ``config["report"]`` is the descriptor of the launcher's report pipe: passed to the zygote (which
        gets its own copy), never closed here (its owner, the caller, closes it)."""
        config = dict(config)
        report = int(config.pop("report"))
        # Each descriptor has one owner that closes it once: this list until it is handed over (to the
        # zygote, which gets copies: ours closed at once; to the task's pipe transports).
        pipes: list[int] = []
        try:
            stdin_read, stdin_write = os.pipe() if stdin is not None else (os.open(os.devnull, os.O_RDONLY), -1)
            pipes += [stdin_read, stdin_write]
            out_read, out_write = os.pipe()
            pipes += [out_read, out_write]
            err_read, err_write = os.pipe()
            pipes += [err_read, err_write]
            self._next_id += 1
            request_id = self._next_id
            started = self.loop.create_future()
            self._starting[request_id] = started
            message = {"op": "run", "id": request_id, "config": config, "argv": list(argv), "env": dict(env)}
            message["cwd"] = cwd
            try:
                await self._send_run(message, [stdin_read, out_write, err_write, report])
            except BaseException:
                self._starting.pop(request_id, None)
                raise
            for fd in (stdin_read, out_write, err_write):  # the launcher has its own copies now
                pipes.remove(fd)  # first: a close that raises must not leave it to the cleanup's
                os.close(fd)
            try:
                pid = await asyncio.wait_for(started, START_TIMEOUT_S)
            except TimeoutError:
                # A zygote that does not answer (stopped, stuck) is replaced: killed, its end of file
                # fails what else waited; a fork it does later is killed with it (its launcher's parent).
                self.popen.kill()
                raise OSError(f"the executor's zygote did not answer within {START_TIMEOUT_S:g} s") from None
            task: LaunchedTask | None = None
            try:
                # From here on each is owned by its transport (which closes it, also when it fails).
                pipes.remove(out_read)
                stdout, out_pipe = task_pipes.open_reader(self.loop, out_read)
                pipes.remove(err_read)
                try:
                    stderr, err_pipe = task_pipes.open_reader(self.loop, err_read)
                except BaseException:
                    out_pipe.close()
                    raise
                task = LaunchedTask(self, pid, stdout, stderr)
                task._pipes += [out_pipe, err_pipe]
                self._running[pid] = task
                if pid in self._exited:
                    task._end(os.waitstatus_to_exitcode(self._exited.pop(pid)))
                elif not self.alive:
                    task._end(None, LOST)
                if stdin_write >= 0:
                    pipes.remove(stdin_write)
                    task._pipes.append(task_pipes.feed(self.loop, stdin_write, stdin or b""))
            except BaseException:  # cancelled (the executor stops) or failed: nobody would supervise it
                if task is not None:
                    task.close_pipes()
                self._abandon(pid)
                raise
            return task
        finally:
            for fd in pipes:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def kill(self, pid: int, sig: int) -> None:
        """Ask the zygote to signal launcher ``pid``'s group; queued on the loop when its buffer is full.
        Nothing when it is dead: its launchers stop their tasks themselves."""
        message = {"op": "kill", "pid": pid, "sig": int(sig)}
        try:
            self.send(message)
        except BlockingIOError:
            sending = self.loop.create_task(self._send_waiting(message))
            self._pending.add(sending)
            sending.add_done_callback(self._pending.discard)
        except OSError:
            pass

    def _abandon(self, pid: int) -> None:
        """A launcher whose caller went away before it got the task: SIGINT (every descendant of it
        SIGKILLed at once), and its end is not waited for."""
        self._running.pop(pid, None)
        self._abandoned.add(pid)
        if pid in self._exited:
            self._abandoned.discard(pid)
            del self._exited[pid]
            return
        self.kill(pid, signal.SIGINT)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._died()
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, message: dict) -> None:
        op = message.get("op")
        if op == "started":
            future = self._starting.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(int(message["pid"]))
            else:  # its launch() was cancelled while the zygote forked
                self._abandon(int(message["pid"]))
        elif op == "failed":
            future = self._starting.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_exception(OSError(f"the zygote could not fork the launcher: {message['error']}"))
        elif op == "exited":
            pid, status = int(message["pid"]), int(message["status"])
            task = self._running.pop(pid, None)
            if pid in self._abandoned:
                self._abandoned.discard(pid)
            elif task is None:
                self._exited[pid] = status
            else:
                task._end(os.waitstatus_to_exitcode(status))

    def _died(self) -> None:
        """The zygote is gone: what was starting failed, what was running is lost, and it is reaped."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)  # its waiters try again, and learn it is gone
        self.sock.close()
        for future in self._starting.values():
            if not future.done():
                future.set_exception(OSError("the executor's zygote died while starting the task"))
        self._starting.clear()
        for task in self._running.values():
            task._end(None, LOST)
        self._running.clear()
        self.reap()

    def reap(self) -> None:
        """Collect the zygote's exit status once it has exited (it exits at once without its socket)."""
        if self.popen.poll() is None and not self.loop.is_closed():
            self.loop.call_later(0.05, self.reap)

    def close(self) -> None:
        """End the zygote (it exits on the end of file; its running launchers then stop their tasks)."""
        self._died()


_zygote: Zygote | None = None


def current() -> Zygote:
    """The event loop's zygote, started when there is none (or it died, or belongs to a finished loop)."""
    global _zygote
    loop = asyncio.get_running_loop()
    if _zygote is not None and (not _zygote.alive or _zygote.loop is not loop):
        if _zygote.loop is not loop:
            # Its loop is gone, or idle (a test's): nobody reads it any more. Unwatched before it is
            # closed: a live loop still watching the number would miss the next descriptor given it
            # (asyncio's selector keeps the stale entry, and a new registration only replaces its data).
            if not _zygote.loop.is_closed():
                with contextlib.suppress(ValueError, OSError, RuntimeError):
                    _zygote.loop.remove_reader(_zygote.sock.fileno())
                    _zygote.loop.remove_writer(_zygote.sock.fileno())
            _zygote.sock.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                _zygote.popen.wait(timeout=2)
        _zygote = None
    if _zygote is None:
        _zygote = Zygote()
    return _zygote


async def launch(
    config: Mapping[str, object], argv: Sequence[str], *, env: Mapping[str, str], cwd: str, stdin: bytes | None
) -> LaunchedTask:
    """Start a task's launcher through the zygote (see :meth:`Zygote.launch`); a zygote found dead when
    the request was sent is replaced once, since it never saw the request."""
    try:
        return await current().launch(config, argv, env, cwd, stdin)
    except ZygoteGone:
        return await current().launch(config, argv, env, cwd, stdin)


def stop() -> None:
    """End this process's zygote, if any (the executor stops; a test wants a fresh one)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None
