"""The resource limits of one task run. Kept apart from the catalog so the sandbox needs neither YAML
nor JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Limits:
    """What one run may use. The kernel enforces all but the wall clock and the output tails."""

    timeout_s: float = 300.0  # wall clock; default 5 minutes
    cpu_s: int = 300  # RLIMIT_CPU: SIGXCPU at cpu_s, SIGKILL one second later
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 64  # RLIMIT_NPROC: counted per real uid, so it only bites after dropping root
    max_file_bytes: int = 64 << 20  # RLIMIT_FSIZE
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_output_bytes: int = 64 << 10  # tail kept per stream; totals still counted
    kill_grace_s: float = 2.0  # between SIGTERM and SIGKILL on timeout or cancel

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s", "memory_bytes", "max_processes", "max_file_bytes", "max_open_files"):
            if getattr(self, name) <= 0:
                raise ValueError(f"limits.{name} must be positive")
        if self.max_output_bytes < 0 or self.kill_grace_s < 0:
            raise ValueError("limits.max_output_bytes and limits.kill_grace_s must not be negative")

    def replace_timeout(self, timeout_s: float | None) -> Limits:
        """These limits with a caller's shorter wall clock (a request may lower, never raise, it)."""
        if timeout_s is None or timeout_s >= self.timeout_s:
            return self
        return replace(self, timeout_s=timeout_s)
