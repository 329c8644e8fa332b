"""Routing logic: which provider answers, and the books. No gRPC here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.chat import ROLES, ChatDelta, ChatResult, Message, SamplingParams
from services.common.errors import Cancelled, GoblinError, InvalidArgument, NotFound
from services.router.ledger import RoutingLedger, RoutingRecord
from services.router.metrics import COST, PROVIDER_LATENCY, REQUESTS
from services.router.providers.base import CallContext, Embeddings, ModelInfo, Provider

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "local"


@dataclass(frozen=True)
class Route:
    provider: Provider
    model: str  # the provider's own model name

    @property
    def model_id(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(frozen=True)
class ChatCall:
    model: str
    messages: list[Message]
    params: SamplingParams
    context: CallContext


def validate_chat(call: ChatCall) -> None:
    if not call.model.strip():
        raise InvalidArgument("model is required")
    if not call.messages:
        raise InvalidArgument("messages must not be empty")
    for i, message in enumerate(call.messages):
        if message.role not in ROLES:
            raise InvalidArgument(f"messages[{i}].role must be one of {sorted(ROLES)}")
    params = call.params
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidArgument("max_tokens must be at least 1")
    if params.temperature is not None and not 0 <= params.temperature <= 2:
        raise InvalidArgument("temperature must be between 0 and 2")
    if params.top_p is not None and not 0 < params.top_p <= 1:
        raise InvalidArgument("top_p must be in (0, 1]")
    if len(params.stop) > 4:
        raise InvalidArgument("at most 4 stop sequences")


class RouterService:
    def __init__(self, providers: list[Provider], ledger: RoutingLedger) -> None:
        self.providers = {p.name: p for p in providers}
        self.ledger = ledger

    async def list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        for provider in self.providers.values():
            models.extend(await provider.list_models())
        return models

    async def resolve(self, model_id: str, capability: str = "chat") -> Route:
        """``local`` (the alias), a catalog alias, or ``<provider>/<model>``."""
        wanted = model_id.strip()
        if "/" in wanted:
            provider_name, model = wanted.split("/", 1)
            provider = self.providers.get(provider_name)
            if provider is None:
                raise NotFound(
                    f"model '{wanted}' not found: no provider '{provider_name}'", code="model_not_found"
                )
            return Route(provider, model)
        for provider in self.providers.values():
            for info in await provider.list_models():
                if capability in info.capabilities and wanted in info.aliases:
                    return Route(provider, info.model)
        raise NotFound(f"model '{wanted}' not found", code="model_not_found")

    def _record(self, call: ChatCall, route: Route | None, **fields: object) -> None:
        record = RoutingRecord(
            requested_model=call.model,
            provider=route.provider.name if route else "",
            model=route.model if route else "",
            correlation_id=call.context.correlation_id,
            tenant_id=call.context.tenant_id,
            user_hash=call.context.user_hash,
            api_key_id=call.context.api_key_id,
            **fields,  # type: ignore[arg-type]
        )
        self.ledger.record(record)
        REQUESTS.labels(record.provider or "none", record.outcome).inc()
        if record.cost_usd:
            COST.labels(record.provider, record.model).inc(record.cost_usd)

    async def chat(self, call: ChatCall) -> ChatResult:
        validate_chat(call)
        route: Route | None = None
        started = time.perf_counter()
        try:
            route = await self.resolve(call.model)
            result = await route.provider.chat(route.model, call.messages, call.params, call.context)
        except GoblinError as exc:
            self._record(call, route, outcome="error", error_code=exc.code, latency_ms=_ms(started))
            raise
        elapsed = time.perf_counter() - started
        PROVIDER_LATENCY.labels(route.provider.name, "chat").observe(elapsed)
        self._record(
            call,
            route,
            outcome="ok",
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            latency_ms=elapsed * 1000,
        )
        return result

    async def stream(self, call: ChatCall) -> AsyncIterator[tuple[Route, ChatDelta]]:
        """Deltas as the provider makes them, each with the route that produced it."""
        validate_chat(call)
        route: Route | None = None
        started = time.perf_counter()
        ttft_ms: float | None = None
        usage = None
        outcome, error_code = "cancelled", ""
        try:
            route = await self.resolve(call.model)
            async for delta in route.provider.stream(route.model, call.messages, call.params, call.context):
                if ttft_ms is None and delta.text:
                    ttft_ms = _ms(started)
                    PROVIDER_LATENCY.labels(route.provider.name, "chat_ttft").observe(ttft_ms / 1000)
                if delta.usage is not None:
                    usage = delta.usage
                yield route, delta
            outcome = "ok"
        except GoblinError as exc:
            outcome, error_code = ("cancelled" if isinstance(exc, Cancelled) else "error"), exc.code
            raise
        finally:
            if route is not None and outcome == "ok":
                PROVIDER_LATENCY.labels(route.provider.name, "chat").observe(time.perf_counter() - started)
            self._record(
                call,
                route,
                outcome=outcome,
                error_code=error_code,
                stream=True,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                latency_ms=_ms(started),
                ttft_ms=ttft_ms,
            )

    async def embed(self, model_id: str, inputs: list[str], context: CallContext) -> Embeddings:
        if not inputs:
            raise InvalidArgument("input must not be empty")
        route = await self.resolve(model_id or DEFAULT_ALIAS, capability="embeddings")
        started = time.perf_counter()
        result = await route.provider.embed(route.model, inputs, context)
        PROVIDER_LATENCY.labels(route.provider.name, "embeddings").observe(time.perf_counter() - started)
        return result


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
