"""Executor service settings."""

from __future__ import annotations

from pydantic import Field

from services.common.secrets import SecretScanningSettings
from services.common.settings import DatabaseSettings, ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS


class ExecutorSettings(ServiceSettings, DatabaseSettings, SecretScanningSettings):
    grpc_port: int = Field(GRPC_PORTS["executor"], alias="GOBLIN_EXECUTOR_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["executor"], alias="GOBLIN_EXECUTOR_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_EXECUTOR_PROBE_PORT", ge=0, le=65535)
    # Tasks this process runs at once (each a process group of its own).
    concurrency: int = Field(2, alias="GOBLIN_EXECUTOR_CONCURRENCY", ge=0, le=64)
    # Queued plus running tasks per tenant; beyond it a new task is refused with 429 task_queue_full.
    max_queued_per_tenant: int = Field(100, alias="GOBLIN_EXECUTOR_MAX_QUEUED_PER_TENANT", ge=1, le=100_000)
    # Custom scripts (bash or Python source in the request), for admins only, when this is on.
    allow_scripts: bool = Field(False, alias="GOBLIN_EXECUTOR_ALLOW_SCRIPTS")
    # A running task's lease: renewed every lease_s / 3 by its executor; once it has expired the
    # executor is taken for dead and the task is failed ("executor lost") or, if idempotent, requeued.
    lease_s: float = Field(15.0, alias="GOBLIN_EXECUTOR_LEASE_S", ge=1.0, le=3600.0)
    # The fallback when a NOTIFY is missed (a reconnecting listener): how often idle workers look.
    poll_s: float = Field(1.0, alias="GOBLIN_EXECUTOR_POLL_S", gt=0.0, le=60.0)
    # Default and ceiling of a task's timeout when the request names none / a larger one.
    default_timeout_s: int = Field(300, alias="GOBLIN_EXECUTOR_DEFAULT_TIMEOUT_S", ge=1, le=86_400)
    max_timeout_s: int = Field(3600, alias="GOBLIN_EXECUTOR_MAX_TIMEOUT_S", ge=1, le=86_400)
    # "rlimits" or "bwrap" (bubblewrap, when installed and working); "auto": bwrap where it works.
    sandbox: str = Field("auto", alias="GOBLIN_EXECUTOR_SANDBOX", pattern=r"^(auto|rlimits|bwrap)$")
    # Where each task's own temporary working directory is created (and removed afterwards); empty:
    # GOBLIN_HOME/executor/work, or <tmp>/goblin-executor-<uid> when the task's user cannot reach that.
    work_root: str = Field("", alias="GOBLIN_EXECUTOR_WORK_ROOT")
