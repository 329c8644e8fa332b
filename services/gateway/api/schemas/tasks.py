"""Bodies and answers of the task routes (``/v1/tasks``, ``/v1/goblins``).

Each answer model builds itself from the executor's message (``.of``), in one copy.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from goblin.v1 import executor_pb2
from services.gateway.api.schemas.auth import Text

TaskId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the task's id")]
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
# The executor's own bounds (servicer.py, runspec.py), checked here too so a client hears them as 400s.
MAX_SCRIPT_CHARS = 64 * 1024
MAX_TIMEOUT_S = 86_400


class TaskCreateBody(BaseModel):
    """Run a goblin with arguments, or (admins, where enabled) a script."""

    model_config = ConfigDict(extra="forbid")

    goblin: Annotated[Text, Field(max_length=128)] | None = Field(None, description="a goblin's name (GET /v1/goblins)")
    args: dict[str, Any] = Field(default_factory=dict, description="the goblin's arguments, per its JSON Schema")
    script: Annotated[Text, Field(max_length=MAX_SCRIPT_CHARS)] | None = Field(
        None, description="source text run by its interpreter: admins only, when GOBLIN_EXECUTOR_ALLOW_SCRIPTS=true"
    )
    script_language: Literal["bash", "python"] = "bash"
    dry_run: bool = Field(
        False, description="return exactly what would run (argv, environment names, limits); run nothing"
    )
    timeout_s: int = Field(0, ge=0, le=MAX_TIMEOUT_S, description="shorter than the goblin's own, or 0 for it")

    @model_validator(mode="after")
    def _one_of(self) -> TaskCreateBody:
        if bool(self.goblin) == bool(self.script):
            raise ValueError("name a goblin or send a script (exactly one)")
        if self.script and self.args:
            raise ValueError("args: a script takes no args")
        try:
            self.args_json().encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("args: not valid Unicode text") from None
        return self

    def args_json(self) -> str:
        return json.dumps(self.args, ensure_ascii=False)


def _when(unix_ms: int) -> datetime | None:
    return datetime.fromtimestamp(unix_ms / 1000, UTC) if unix_ms else None


class TaskOut(BaseModel):
    id: str
    goblin: str | None
    script_language: str | None
    status: TaskStatus
    dry_run: bool
    args: dict[str, Any]
    exit_code: int | None
    signal: str | None
    error: str | None
    attempts: int
    max_attempts: int
    timeout_s: int
    stdout: str = Field(description="the last part of the output (bounded), secrets redacted")
    stderr: str
    stdout_bytes: int = Field(description="the output's whole size")
    stderr_bytes: int
    requester: str = Field(description="a one-way hash of the requesting user")
    tenant_id: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    plan: dict[str, Any] | None = Field(None, description="dry run: what would run")

    @classmethod
    def of(cls, task: executor_pb2.Task) -> TaskOut:
        return cls(
            id=task.id,
            goblin=task.goblin or None,
            script_language=task.script_language or None,
            status=task.status,
            dry_run=task.dry_run,
            args=json.loads(task.args_json) if task.args_json else dict(task.args),
            exit_code=task.exit_code if task.HasField("exit_code") else None,
            signal=task.signal or None,
            error=task.error or None,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            timeout_s=task.timeout_s,
            stdout=task.stdout,
            stderr=task.stderr,
            stdout_bytes=task.stdout_bytes,
            stderr_bytes=task.stderr_bytes,
            requester=task.requester,
            tenant_id=task.tenant_id,
            created_at=_when(task.created),
            started_at=_when(task.started),
            finished_at=_when(task.finished),
            duration_s=task.duration_s if task.finished and task.started else None,
            plan=json.loads(task.plan_json) if task.plan_json else None,
        )


class TaskList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TaskOut]


class GoblinOut(BaseModel):
    name: str
    description: str
    args: list[str]
    args_schema: dict[str, Any]
    default_timeout_s: int
    idempotent: bool

    @classmethod
    def of(cls, goblin: executor_pb2.Goblin) -> GoblinOut:
        return cls(
            name=goblin.name,
            description=goblin.description,
            args=list(goblin.args),
            args_schema=json.loads(goblin.args_schema_json) if goblin.args_schema_json else {},
            default_timeout_s=goblin.default_timeout_s,
            idempotent=goblin.idempotent,
        )


class GoblinList(BaseModel):
    object: Literal["list"] = "list"
    data: list[GoblinOut]
