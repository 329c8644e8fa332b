"""Small fakes for the router's unit tests: scripted providers, an in-memory Redis, a list ledger."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions
from services.router.catalog import Catalog, build_catalog, check_layer, merge_layers
from services.router.ledger import RoutingRecord
from services.router.models import ModelInfo
from services.router.providers.base import CallContext, Embeddings


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Break:
    """Stream this many pieces, then fail with ``error``."""

    after: int
    error: Exception


@dataclass
class ScriptedProvider:
    """Answers "<name> answer" with usage 100/20 unless its script says otherwise: each call takes the
    next item (an exception to raise, a :class:`Break` for streams, or None for a normal answer)."""

    name: str
    configured: bool = True
    script: list[Any] = field(default_factory=list)
    calls: list[tuple[str, SamplingParams]] = field(default_factory=list)
    options: list[ChatOptions] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage(prompt_tokens=100, completion_tokens=20))
    closed_streams: int = 0

    def _next(self) -> Any:
        return self.script.pop(0) if self.script else None

    async def list_models(self) -> list[ModelInfo]:
        return []

    async def chat(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> ChatResult:
        self.calls.append((spec.id, params))
        self.options.append(options)
        outcome = self._next()
        if isinstance(outcome, BaseException):
            raise outcome
        return ChatResult(
            text=f"{self.name} answer",
            finish_reason="stop",
            usage=self.usage,
            model=spec.id,
            provider=self.name,
        )

    async def stream(
        self,
        spec: ModelInfo,
        messages: list[Message],
        params: SamplingParams,
        context: CallContext,
        options: ChatOptions = NO_OPTIONS,
    ) -> AsyncIterator[ChatDelta]:
        self.calls.append((spec.id, params))
        self.options.append(options)
        outcome = self._next()
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            pieces = [f"{self.name}", " says", " hi"]
            for i, piece in enumerate(pieces):
                if isinstance(outcome, Break) and i >= outcome.after:
                    raise outcome.error
                yield ChatDelta(text=piece)
            yield ChatDelta(finish_reason="stop", usage=self.usage)
        finally:
            self.closed_streams += 1

    async def embed(self, spec: ModelInfo, inputs: list[str], context: CallContext) -> Embeddings:
        self.calls.append((spec.id, SamplingParams()))
        outcome = self._next()
        if isinstance(outcome, BaseException):
            raise outcome
        return Embeddings(model=spec.id, vectors=[[0.1, 0.2]] * len(inputs), prompt_tokens=len(inputs), dimensions=2)

    async def aclose(self) -> None:
        pass


class Providers:
    def __init__(self, *providers: ScriptedProvider) -> None:
        self.by_name = {p.name: p for p in providers}

    def get(self, name: str) -> ScriptedProvider | None:
        return self.by_name.get(name)

    def all(self) -> list[ScriptedProvider]:
        return list(self.by_name.values())

    def base_url(self, name: str) -> str:
        return f"https://{name}.example"


class ListLedger:
    def __init__(self) -> None:
        self.rows: list[RoutingRecord] = []

    def record(self, record: RoutingRecord) -> None:
        self.rows.append(record)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.ops: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> FakePipeline:
            self.ops.append((name, args))
            return self

        return queue

    async def execute(self) -> list[Any]:
        if self.redis.down:
            raise ConnectionError("redis is down")
        return [getattr(self.redis, f"_{name}")(*args) for name, args in self.ops]


class FakeRedis:
    """The few commands the router uses, in memory, with a switch to make it fail."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("redis is down")

    def _get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def _incrbyfloat(self, key: str, amount: float) -> bytes:
        value = float(self.data.get(key, b"0")) + amount
        self.data[key] = repr(value).encode()
        return self.data[key]

    def _expire(self, key: str, seconds: int) -> bool:
        self.ttl[key] = seconds
        return True

    async def get(self, key: str) -> bytes | None:
        self._check()
        return self._get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    async def set(self, key: str, value: str | bytes, ex: int | None = None) -> bool:
        self._check()
        self.data[key] = value.encode() if isinstance(value, str) else value
        if ex is not None:
            self.ttl[key] = ex
        return True

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


def catalog_from(data: dict[str, Any]) -> Catalog:
    return build_catalog(merge_layers(check_layer(copy.deepcopy(data), "test")))


TEST_CATALOG = {
    "providers": {
        "alpha": {
            "kind": "openai_compatible",
            "base_url": "https://alpha.example/v1",
            "priority": 20,
            "weight": 1,
        },
        "beta": {
            "kind": "openai_compatible",
            "base_url": "https://beta.example/v1",
            "priority": 10,
            "weight": 3,
        },
        "gamma": {"kind": "anthropic", "base_url": "https://gamma.example", "priority": 30},
    },
    "models": {
        "alpha/big": {
            "aliases": ["smart"],
            "context_length": 1000,
            "input_price_per_mtok": 3.0,
            "output_price_per_mtok": 15.0,
        },
        "beta/small": {
            "aliases": ["smart"],
            "context_length": 100_000,
            "input_price_per_mtok": 0.15,
            "output_price_per_mtok": 0.6,
        },
        "gamma/mid": {"context_length": 100_000, "input_price_per_mtok": 1.0, "output_price_per_mtok": 5.0},
        "gamma/free": {"context_length": 100_000},
        "alpha/embed": {"input_price_per_mtok": 0.02, "capabilities": ["embeddings"]},
    },
    "policies": {
        "cheap": {"strategy": "cheapest", "models": ["alpha/big", "gamma/mid", "beta/small"]},
    },
}


@pytest.fixture
def catalog() -> Catalog:
    return catalog_from(TEST_CATALOG)
