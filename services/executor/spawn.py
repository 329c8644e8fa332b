"""Start a task's launcher without ``fork()``, and follow it from the event loop.

Why not ``asyncio.create_subprocess_exec``: the services run on uvloop, whose spawn is a real
``fork()`` of the executor. ``fork()`` runs every ``pthread_atfork`` handler, and gRPC registers
some: in the child, a copy of a multi-threaded gRPC process, they restart gRPC's poller and timer
threads, which then hit gRPC's own checks (``ev_epoll1_linux.cc: Check failed: next_worker->state ==
KICKED``) and abort the child, or crash it (SIGSEGV), before it reaches ``exec``. The task then "dies
of SIGABRT" with empty output (the message goes to the executor's log, the child's stderr until
its pipes are set up). Those restarted threads also share the parent's sockets until ``exec``, so
they can consume or write bytes of the parent's TLS connections (a peer then sees
``TSI_DATA_CORRUPTED``). uvloop additionally runs Python code in the child (its after-fork hook).

``subprocess.Popen`` without ``preexec_fn`` goes through CPython's ``_posixsubprocess`` with
``vfork()``: no fork handlers, no Python in the child, and no copy of the executor's page tables
(about 4x faster to start, see bench/RESULTS.md). Its pipes are then read and written by the event
loop, and its end is seen through a pidfd (Linux 5.3+; a thread waits where there is none).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence


class Child:
    """A started launcher: its pid, its output as stream readers, and ``wait()`` for its end.

    ``returncode`` is None while it runs, then its exit code, or minus the signal that ended it."""

    def __init__(self, popen: subprocess.Popen, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        self._ended = asyncio.get_running_loop().create_future()
        self._watch()

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self) -> int:
        """Until the process has ended (it is reaped here, through the Popen, never by anyone else)."""
        await asyncio.shield(self._ended)
        return self.popen.returncode

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd: a thread blocks in waitpid for it instead.
            waiter = loop.run_in_executor(None, self.popen.wait)
            waiter.add_done_callback(lambda _: self._set_ended())
            return

        def readable() -> None:
            if self.popen.poll() is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                self._set_ended()

        loop.add_reader(pidfd, readable)

    def _set_ended(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)


async def _reader(loop: asyncio.AbstractEventLoop, pipe) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    stdin: bytes | None,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start ``argv`` in a new session (its process group is its own) with stdout and stderr piped
    to the caller and ``stdin`` (when given) written to it, then closed; nothing else is inherited
    but ``pass_fds``."""
    loop = asyncio.get_running_loop()
    # Blocking only until the child's exec (vfork suspends the caller that long): about a millisecond.
    popen = subprocess.Popen(  # noqa: ASYNC220
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    try:
        stdout = await _reader(loop, popen.stdout)
        stderr = await _reader(loop, popen.stderr)
        if stdin is not None:
            await _feed(loop, popen.stdin, stdin)
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return Child(popen, stdout, stderr)


async def _feed(loop: asyncio.AbstractEventLoop, pipe, data: bytes) -> None:
    """Write ``data`` to the process's stdin and close it; the loop flushes it in the background. A
    process that exits or closes stdin first only loses what it did not read."""
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
    with contextlib.suppress(OSError, RuntimeError):
        transport.write(data)
    transport.close()  # after the buffered data is flushed
