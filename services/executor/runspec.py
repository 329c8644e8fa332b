"""From a task (a goblin and its arguments, or a script) to the sandbox's :class:`RunSpec`: the one place
that decides what a task runs, used both for the dry-run plan and for the real run, so a plan shows
exactly what would run."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument, NotFound
from services.executor.catalog import Catalog, GoblinSpec
from services.executor.config import ExecutorSettings
from services.executor.limits import Limits
from services.executor.sandbox import RunSpec, available_modes, clean_environment
from services.executor.taskuser import default_work_root, task_python

SCRIPT_LANGUAGES = ("bash", "python")
# A script is source text: anything larger is not a script an admin typed.
MAX_SCRIPT_CHARS = 64 * 1024


def script_argv(language: str) -> tuple[str, ...]:
    """The interpreter that reads a script from stdin (the script never becomes an argv item)."""
    if language == "bash":
        bash = shutil.which("bash") or "/bin/bash"
        return (bash, "-s")
    if language == "python":
        return (task_python(), "-I", "-")
    raise InvalidArgument(f"script_language: must be one of {', '.join(SCRIPT_LANGUAGES)}")


class RunSpecs:
    """Builds run specs with this executor's settings (sandbox mode, work root, timeouts)."""

    def __init__(self, catalog: Catalog, settings: ExecutorSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        preferred = Path(settings.work_root) if settings.work_root else settings.goblin_home / "executor" / "work"
        # Tasks run as an unprivileged user when the executor is root: a root it cannot reach (a private
        # GOBLIN_HOME) gives way to one under the system's temporary directory (taskuser).
        self.work_root = default_work_root(preferred)
        modes = available_modes()
        if settings.sandbox == "auto":
            self.mode = "bwrap" if "bwrap" in modes else "rlimits"
        else:
            if settings.sandbox not in modes:
                raise ValueError(
                    f"GOBLIN_EXECUTOR_SANDBOX={settings.sandbox} is not available here (available: {', '.join(modes)})"
                )
            self.mode = settings.sandbox

    def goblin(self, name: str) -> GoblinSpec:
        """The goblin ``name``; an unknown one is the request's mistake (400 naming the field)."""
        try:
            return self.catalog.get(name)
        except NotFound:
            raise InvalidArgument(f"goblin: no goblin named {name[:64]!r} (GET /v1/goblins lists them)") from None

    def limits(self, requested_timeout_s: int, limits: Limits) -> Limits:
        """``limits`` with the request's wall clock: a request may shorten the goblin's, never lengthen
        it, and nothing runs longer than GOBLIN_EXECUTOR_MAX_TIMEOUT_S."""
        if requested_timeout_s < 0:
            raise InvalidArgument("timeout_s: must not be negative")
        limits = limits.replace_timeout(requested_timeout_s or None)
        return limits.replace_timeout(float(self.settings.max_timeout_s))

    def max_attempts(self, goblin: str) -> int:
        """Runs allowed when executors die mid-run: only an idempotent goblin is run again."""
        if not goblin:
            return 1
        spec = self.goblin(goblin)
        return max(1, spec.max_attempts) if spec.idempotent else 1

    def for_goblin(self, name: str, args: dict[str, Any], timeout_s: int) -> RunSpec:
        """The run of goblin ``name`` with ``args`` (validated: InvalidArgument naming the field)."""
        spec = self.goblin(name)
        run = self.catalog.run_spec(
            name, args, work_root=self.work_root, mode=self.mode, timeout_s=None, source_env=os.environ
        )
        return dataclasses.replace(run, limits=self.limits(timeout_s, spec.limits))

    def for_script(self, script: str, language: str, timeout_s: int) -> RunSpec:
        """A script run by its interpreter from stdin, with the default limits and no extra environment."""
        if not script.strip():
            raise InvalidArgument("script: must not be empty")
        if len(script) > MAX_SCRIPT_CHARS:
            raise InvalidArgument(f"script: at most {MAX_SCRIPT_CHARS} characters")
        limits = self.limits(timeout_s, Limits(timeout_s=float(self.settings.default_timeout_s)))
        return RunSpec(
            argv=script_argv(language),
            env=clean_environment((), os.environ),
            limits=limits,
            work_root=self.work_root,
            mode=self.mode,
            stdin=script.encode("utf-8"),
        )
