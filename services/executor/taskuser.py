"""Who a task runs as, and the directories it works in.

When the executor runs as root, tasks drop to an unprivileged user (``GOBLIN_EXECUTOR_RUN_AS``, a user
name or uid, default nobody). That user must be able to reach the task's directory and its program:
the helpers here check it with the "other" permission bits, which are what apply to nobody.

``GOBLIN_EXECUTOR_RUN_AS_RANGE=FIRST-LAST`` gives each running task a uid (and gid) of its own from
that range instead: RLIMIT_NPROC counts per uid, so a shared user makes every task's process limit a
budget for all of them together (and for anything else running as that user), and tasks of one uid
can signal each other. A uid is held with an advisory lock on ``<work root>/.uid-N.lock`` while its
task runs, so executors sharing a work root never hand out the same one; a dead executor's locks go
with it. The uids need no passwd entry (a task asking for its user name gets none).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import random
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
RUN_AS_ENV = "GOBLIN_EXECUTOR_RUN_AS"
RUN_AS_RANGE_ENV = "GOBLIN_EXECUTOR_RUN_AS_RANGE"
DEFAULT_RUN_AS = "nobody"
TASK_DIR_PREFIX = "task-"


def run_as() -> tuple[int, int] | None:
    """(uid, gid) tasks drop to: ``GOBLIN_EXECUTOR_RUN_AS`` (a user name or uid), default nobody; None
    when the executor is not root (it cannot change user, and runs tasks as itself)."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get(RUN_AS_ENV, "").strip() or DEFAULT_RUN_AS
    try:
        entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
    except (KeyError, ValueError):
        if wanted.isdigit():
            return int(wanted), int(wanted)
        raise ValueError(f"{RUN_AS_ENV}={wanted!r}: no such user") from None
    if entry.pw_uid == 0:
        raise ValueError(f"{RUN_AS_ENV}={wanted!r} is root; tasks must run unprivileged")
    return entry.pw_uid, entry.pw_gid


def run_as_range() -> tuple[int, int] | None:
    """(first, last) of ``GOBLIN_EXECUTOR_RUN_AS_RANGE``, or None when unset or the executor is not root."""
    text = os.environ.get(RUN_AS_RANGE_ENV, "").strip()
    if not text or os.geteuid() != 0:
        return None
    try:
        first, last = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise ValueError(f"{RUN_AS_RANGE_ENV}={text!r}: expected FIRST-LAST, two uids") from None
    if not 0 < first <= last < 2**32 - 1:
        raise ValueError(f"{RUN_AS_RANGE_ENV}={text!r}: expected 0 < FIRST <= LAST (uid 0 is root)")
    return first, last


@contextlib.contextmanager
def task_user(work_root: Path) -> Iterator[tuple[int, int] | None]:
    """The (uid, gid) one task runs as, held for as long as the block runs: a free uid of
    ``GOBLIN_EXECUTOR_RUN_AS_RANGE`` when it is set, else :func:`run_as` (shared by every task)."""
    span = run_as_range()
    if span is None:
        yield run_as()
        return
    root = Path(work_root)
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    first, last = span
    # A random start spreads the uids of concurrent executors; the locks make them exclusive.
    count = last - first + 1
    start = random.randrange(count)
    for offset in range(count):
        uid = first + (start + offset) % count
        fd = os.open(root / f".uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid, uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise RuntimeError(f"every uid of {RUN_AS_RANGE_ENV} ({first}-{last}) is held by a running task")


def task_can_execute(path: str) -> bool:
    """Whether the run-as user can reach and execute ``path`` (judged by the "other" permission bits
    along the resolved path, which is what applies to nobody). Always True when tasks run as the
    executor's own user. A Python under /root (pyenv) is a common reason for False."""
    if run_as() is None:
        return os.access(path, os.X_OK)
    if not _others_can_reach(Path(path), include_self=True):
        return False
    interpreter = _shebang(path)
    return interpreter is None or _others_can_reach(Path(interpreter), include_self=True)


def _shebang(path: str) -> str | None:
    """The interpreter a script names on its ``#!`` line (a console script's virtualenv Python)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words else None


def task_python() -> str:
    """The Python a task runs: the executor's own interpreter when the task's user can execute it,
    else the system's ``python3`` (a pyenv Python under a 0700 /root is out of nobody's reach). Only
    for standard-library code: the system Python has none of the suite's packages."""
    if task_can_execute(sys.executable):
        return sys.executable
    return shutil.which("python3", path=SAFE_PATH) or sys.executable


def default_work_root(preferred: Path) -> Path:
    """``preferred`` when the task's user can reach it (or will, once created 0711), else a directory
    of the system's temporary directory that it can: ``<tmp>/goblin-executor-<uid>``, owned by the
    executor and never a symlink another user planted."""
    preferred = Path(preferred)
    existing = next((p for p in [preferred, *preferred.parents] if p.exists()), Path("/"))
    if run_as() is None or _others_can_reach(existing, include_self=True):
        return preferred
    fallback = Path(tempfile.gettempdir()) / f"goblin-executor-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        fallback.mkdir(mode=0o711)
    info = os.lstat(fallback)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ValueError(f"{fallback} exists and is not a directory of this user's: refusing to use it")
    os.chmod(fallback, 0o711)
    return fallback


def _others_can_reach(path: Path, include_self: bool) -> bool:
    """Every directory above ``path`` (and ``path`` itself with ``include_self``) has o+x."""
    real = Path(os.path.realpath(path))
    try:
        chain = [real, *real.parents] if include_self else list(real.parents)
        return all(p.stat().st_mode & stat.S_IXOTH for p in chain)
    except OSError:
        return False


def make_task_dir(work_root: Path, user: tuple[int, int] | None) -> str:
    """A new 0700 directory inside ``work_root`` owned by ``user`` (created 0711 if it is missing)."""
    root = Path(work_root)
    if not root.exists():
        # Traversable (not listable) by the task's user, who must reach its own directory inside.
        root.mkdir(mode=0o711, parents=True, exist_ok=True)
    if user is not None and not _others_can_reach(root, include_self=True):
        raise ValueError(
            f"work root {root}: the task user (uid {user[0]}) cannot reach it; it and every directory above"
            " it must be searchable by others (o+x)"
        )
    task_dir = tempfile.mkdtemp(prefix=TASK_DIR_PREFIX, dir=root)  # 0700
    if user is not None:
        os.chown(task_dir, user[0], user[1])
    return task_dir


def remove_task_dir(path: str) -> None:
    """Remove the task directory even where the task took away its own permissions."""

    def retry_writable(func, failed_path, _exc) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed_path), 0o700)
            os.chmod(failed_path, 0o700)
            func(failed_path)

    shutil.rmtree(path, onerror=retry_writable)  # onexc arrives with Python 3.12
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)
