from goblin.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageRequest(_message.Message):
    __slots__ = ("context", "tenant_id", "day")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    tenant_id: str
    day: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., tenant_id: _Optional[str] = ..., day: _Optional[str] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("day", "cost_usd", "budget_usd", "requests", "prompt_tokens", "completion_tokens", "fallbacks", "errors")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    day: str
    cost_usd: float
    budget_usd: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    fallbacks: int
    errors: int
    def __init__(self, day: _Optional[str] = ..., cost_usd: _Optional[float] = ..., budget_usd: _Optional[float] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., fallbacks: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProviderState(_message.Message):
    __slots__ = ("name", "configured", "circuit", "p50_latency_ms", "consecutive_failures", "base_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    configured: bool
    circuit: str
    p50_latency_ms: float
    consecutive_failures: int
    base_url: str
    def __init__(self, name: _Optional[str] = ..., configured: _Optional[bool] = ..., circuit: _Optional[str] = ..., p50_latency_ms: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., base_url: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderState]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderState, _Mapping]]] = ...) -> None: ...
