"""Helpers for the executor's sandbox tests, which start real processes."""

from __future__ import annotations

from pathlib import Path

from services.executor.limits import Limits
from services.executor.sandbox import RunSpec, clean_environment
from services.executor.taskuser import task_python

# The interpreter tasks run: the tests' own unless the task's user cannot reach it (a pyenv Python
# under a 0700 /root, while the tests run as root and tasks as nobody); then the system one.
PY = task_python()


def spec(work_root: Path, *argv: str, mode: str = "rlimits", stdin: bytes | None = None, **limits) -> RunSpec:
    return RunSpec(
        argv=tuple(argv), env=clean_environment(), limits=Limits(**limits), work_root=work_root, mode=mode, stdin=stdin
    )


def python(code: str) -> tuple[str, ...]:
    """An isolated Python running ``code`` (no site-packages: start-up stays fast and predictable)."""
    return (PY, "-I", "-S", "-c", code)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Lines:
    """An on_output callback that records lines per stream."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}

    async def __call__(self, stream: str, line: str) -> None:
        self.lines[stream].append(line)

    def __getitem__(self, stream: str) -> list[str]:
        return self.lines[stream]
