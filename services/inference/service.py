"""The inference service's logic around the engines: model names, validation, status. No gRPC here."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from services.common.chat import Message
from services.common.chat import SamplingParams as RequestParams
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.inference.embeddings import Embedder, EmbeddingResult
from services.inference.engine import (
    ChatEngine,
    ChatMessage,
    Completion,
    EngineStats,
    SamplingParams,
    StreamEvent,
)

PROVIDER = "local"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"
MAX_EMBED_INPUTS = 2048
MAX_EMBED_CHARS = 100_000


def model_id_from_path(path: Path) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``: the name without quantisation."""
    name = path.name.split(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9._\-]+", "-", name).strip("-") or "model"


@dataclass(frozen=True)
class LocalModel:
    id: str  # without the provider prefix
    capabilities: tuple[str, ...]
    context_length: int
    aliases: tuple[str, ...] = (PROVIDER,)


def engine_params(params: RequestParams) -> SamplingParams:
    """The request's parameters, with the engine's defaults for those not given."""
    defaults = SamplingParams()
    return SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature if params.temperature is not None else defaults.temperature,
        top_p=params.top_p if params.top_p is not None else defaults.top_p,
        stop=params.stop,
        seed=params.seed,
    )


class InferenceService:
    def __init__(self, engine: ChatEngine, embedder_factory, chat_model_id: str) -> None:  # noqa: ANN001
        self.engine = engine
        self._embedder_factory = embedder_factory
        self.embedder: Embedder | None = None
        self.chat_model = LocalModel(chat_model_id, ("chat", "completion", "streaming"), engine.n_ctx)
        self.embedding_model = LocalModel(EMBEDDING_MODEL_ID, ("embeddings",), 256)

    @property
    def models(self) -> list[LocalModel]:
        return [self.chat_model, self.embedding_model]

    async def start(self) -> None:
        await self.engine.start()
        if self.embedder is None:
            self.embedder = self._embedder_factory()

    @property
    def ready(self) -> bool:
        return self.engine.loaded and self.embedder is not None

    async def close(self) -> None:
        await self.engine.close()
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _check_model(self, requested: str, model: LocalModel) -> None:
        """Empty, the alias, ``<id>`` or ``local/<id>``: anything else is not ours."""
        name = requested.removeprefix(f"{PROVIDER}/")
        if name and name != model.id and name not in model.aliases:
            raise NotFound(f"model '{requested}' not found", code="model_not_found")

    def model_name(self, model: LocalModel) -> str:
        return f"{PROVIDER}/{model.id}"

    def stream_chat(
        self, model: str, messages: list[Message], params: RequestParams
    ) -> AsyncGenerator[StreamEvent, None]:
        """The engine's stream; the caller must close it (``contextlib.aclosing``) so that a caller
        that goes away frees its place in the batch at once."""
        self._check_model(model, self.chat_model)
        if not messages:
            raise InvalidArgument("messages must not be empty")
        turns = [ChatMessage(role=m.role, content=m.content) for m in messages]
        return self.engine.stream_chat(turns, engine_params(params))

    async def chat(self, model: str, messages: list[Message], params: RequestParams) -> Completion:
        self._check_model(model, self.chat_model)
        if not messages:
            raise InvalidArgument("messages must not be empty")
        turns = [ChatMessage(role=m.role, content=m.content) for m in messages]
        return await self.engine.chat(turns, engine_params(params))

    async def complete(self, model: str, prompt: str, params: RequestParams) -> Completion:
        self._check_model(model, self.chat_model)
        if not prompt:
            raise InvalidArgument("prompt must not be empty")
        return await self.engine.complete(prompt, engine_params(params))

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        self._check_model(model, self.embedding_model)
        if not inputs:
            raise InvalidArgument("inputs must not be empty")
        if len(inputs) > MAX_EMBED_INPUTS:
            raise InvalidArgument(f"at most {MAX_EMBED_INPUTS} inputs per request")
        if any(len(text) > MAX_EMBED_CHARS for text in inputs):
            raise InvalidArgument(f"an input is longer than {MAX_EMBED_CHARS} characters")
        if self.embedder is None:
            raise Unavailable("the embedding model is not loaded")
        return await self.embedder.embed_async(inputs)
