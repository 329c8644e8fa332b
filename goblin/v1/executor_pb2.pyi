from goblin.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Goblin(_message.Message):
    __slots__ = ("name", "description", "args", "default_timeout_s", "args_schema_json", "idempotent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    ARGS_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    args: _containers.RepeatedScalarFieldContainer[str]
    default_timeout_s: int
    args_schema_json: str
    idempotent: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., default_timeout_s: _Optional[int] = ..., args_schema_json: _Optional[str] = ..., idempotent: _Optional[bool] = ...) -> None: ...

class ListGoblinsRequest(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class ListGoblinsResponse(_message.Message):
    __slots__ = ("goblins",)
    GOBLINS_FIELD_NUMBER: _ClassVar[int]
    goblins: _containers.RepeatedCompositeFieldContainer[Goblin]
    def __init__(self, goblins: _Optional[_Iterable[_Union[Goblin, _Mapping]]] = ...) -> None: ...

class RunTaskRequest(_message.Message):
    __slots__ = ("context", "goblin", "script", "args", "dry_run", "timeout_s", "idempotency_key", "script_language", "args_json")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    GOBLIN_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    goblin: str
    script: str
    args: _containers.ScalarMap[str, str]
    dry_run: bool
    timeout_s: int
    idempotency_key: str
    script_language: str
    args_json: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., goblin: _Optional[str] = ..., script: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., dry_run: _Optional[bool] = ..., timeout_s: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., script_language: _Optional[str] = ..., args_json: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "goblin", "status", "dry_run", "exit_code", "stdout", "stderr", "created", "started", "finished", "duration_s", "error", "attempts", "max_attempts", "signal", "tenant_id", "requester", "stdout_bytes", "stderr_bytes", "args", "plan_json", "is_script", "script_language", "timeout_s", "args_json")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    GOBLIN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    IS_SCRIPT_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    goblin: str
    status: str
    dry_run: bool
    exit_code: int
    stdout: str
    stderr: str
    created: int
    started: int
    finished: int
    duration_s: float
    error: str
    attempts: int
    max_attempts: int
    signal: str
    tenant_id: str
    requester: str
    stdout_bytes: int
    stderr_bytes: int
    args: _containers.ScalarMap[str, str]
    plan_json: str
    is_script: bool
    script_language: str
    timeout_s: int
    args_json: str
    def __init__(self, id: _Optional[str] = ..., goblin: _Optional[str] = ..., status: _Optional[str] = ..., dry_run: _Optional[bool] = ..., exit_code: _Optional[int] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., created: _Optional[int] = ..., started: _Optional[int] = ..., finished: _Optional[int] = ..., duration_s: _Optional[float] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., max_attempts: _Optional[int] = ..., signal: _Optional[str] = ..., tenant_id: _Optional[str] = ..., requester: _Optional[str] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., args: _Optional[_Mapping[str, str]] = ..., plan_json: _Optional[str] = ..., is_script: _Optional[bool] = ..., script_language: _Optional[str] = ..., timeout_s: _Optional[int] = ..., args_json: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("context", "task_id")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    task_id: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("context", "limit", "status")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    limit: int
    status: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., limit: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("context", "task_id")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    task_id: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class StreamTaskEventsRequest(_message.Message):
    __slots__ = ("context", "task_id", "after_seq")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    task_id: str
    after_seq: int
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., task_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "seq", "kind", "data", "at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    seq: int
    kind: str
    data: str
    at: int
    def __init__(self, task_id: _Optional[str] = ..., seq: _Optional[int] = ..., kind: _Optional[str] = ..., data: _Optional[str] = ..., at: _Optional[int] = ...) -> None: ...
