from goblin.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class InferenceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InferenceStatus(_message.Message):
    __slots__ = ("model_loaded", "model_path", "queue_length", "queue_capacity", "active_sequences", "n_ctx", "n_threads")
    MODEL_LOADED_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    N_CTX_FIELD_NUMBER: _ClassVar[int]
    N_THREADS_FIELD_NUMBER: _ClassVar[int]
    model_loaded: bool
    model_path: str
    queue_length: int
    queue_capacity: int
    active_sequences: int
    n_ctx: int
    n_threads: int
    def __init__(self, model_loaded: _Optional[bool] = ..., model_path: _Optional[str] = ..., queue_length: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., active_sequences: _Optional[int] = ..., n_ctx: _Optional[int] = ..., n_threads: _Optional[int] = ...) -> None: ...
