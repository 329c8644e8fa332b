"""The inference service's logic around the engines: model names, validation, status. No gRPC here."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path

from services.common.chat import ChatDelta, ChatResult, Message, SamplingParams, new_completion_id
from services.common.chat_content import CAP_JSON, CAP_JSON_SCHEMA, CAP_LOGPROBS, CAP_TOOLS, NO_OPTIONS, ChatOptions
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.inference.embeddings import Embedder, EmbeddingResult
from services.inference.engine import ChatEngine, EngineStats

PROVIDER = "local"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"
# What the local chat model can do. tools: tool_choice "required" or a named function is enforced by
# grammar, "auto" answers in text (README.md); json, json_schema: by grammar; logprobs: from the logits.
# No vision: the GGUF text models have no image encoder.
CHAT_CAPABILITIES = ("chat", "completion", "streaming", CAP_TOOLS, CAP_JSON, CAP_JSON_SCHEMA, CAP_LOGPROBS)
MAX_EMBED_INPUTS = 2048
MAX_EMBED_CHARS = 100_000


def model_id_from_path(path: Path) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``: the name without quantisation."""
    name = path.name.split(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9._\-]+", "-", name).strip("-") or "model"


@dataclass(frozen=True)
class LocalModel:
    """A model this service serves, described as model listings describe every model."""

    name: str  # without the provider prefix
    capabilities: tuple[str, ...]
    context_length: int
    aliases: tuple[str, ...] = (PROVIDER,)
    provider: str = PROVIDER
    owned_by: str = "goblin"
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"


class InferenceService:
    def __init__(self, engine: ChatEngine, embedder_factory, chat_model_id: str) -> None:  # noqa: ANN001
        self.engine = engine
        self._embedder_factory = embedder_factory
        self.embedder: Embedder | None = None
        self.chat_model = LocalModel(chat_model_id, CHAT_CAPABILITIES, engine.n_ctx)
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
        """Empty, the alias, ``<name>`` or ``local/<name>``: anything else is not ours."""
        name = requested.removeprefix(f"{PROVIDER}/")
        if name and name != model.name and name not in model.aliases:
            raise NotFound(f"model '{requested}' not found", code="model_not_found")

    def stream_chat(
        self, model: str, messages: list[Message], params: SamplingParams, options: ChatOptions = NO_OPTIONS
    ) -> AsyncGenerator[ChatDelta, None]:
        """The engine's stream; the caller must close it (``contextlib.aclosing``) so that a caller
        that goes away frees its place in the batch at once."""
        self._check_model(model, self.chat_model)
        return self.engine.stream_chat(messages, params, options)

    async def chat(
        self, model: str, messages: list[Message], params: SamplingParams, options: ChatOptions = NO_OPTIONS
    ) -> ChatResult:
        """The whole answer, named as this service's chat model."""
        self._check_model(model, self.chat_model)
        result = await self.engine.chat(messages, params, options)
        return replace(result, model=self.chat_model.id, provider=PROVIDER)

    async def complete(self, model: str, prompt: str, params: SamplingParams) -> ChatResult:
        """The whole continuation of ``prompt`` (the legacy text completion), with a ``cmpl-`` id."""
        self._check_model(model, self.chat_model)
        if not prompt:
            raise InvalidArgument("prompt must not be empty")
        result = await self.engine.complete(prompt, params)
        return replace(result, model=self.chat_model.id, provider=PROVIDER, id=new_completion_id("cmpl"))

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
