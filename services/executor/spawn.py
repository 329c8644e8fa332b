"""Start the executor's zygote without ``fork()``.

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
(about 4x faster to start, see bench/RESULTS.md).

The one process the executor starts this way is its zygote (zygote.py, prefork.py), once; the zygote,
a small single-threaded process, then ``fork()``s every task's launcher, which is safe there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: str, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """Start ``argv`` through ``vfork`` in a new session, with ``env``, stdin and stdout on /dev/null
    and stderr the executor's own (its log); nothing else is inherited but ``pass_fds``. It blocks the
    caller only until the child's exec (about a millisecond)."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
