"""Routing logic: which provider answers, retries and fallbacks, and the books. No gRPC here.

A request becomes a *plan* (:mod:`services.router.planning`): its candidate models in the order the
routing policy chooses, then the request's own fallbacks. The candidates are tried in turn
(:mod:`services.router.attempts`), with retries at each and a move to the next on failure. A stream is
only moved before its first token: once text has reached the caller, a failure ends the stream. This
module runs chat, streams and embeddings through those two and keeps the books: the ledger row,
metrics, budgets and the response cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import Protocol

from services.common.chat import (
    ChatDelta,
    ChatResult,
    Message,
    SamplingParams,
    Usage,
    check_messages,
    new_completion_id,
)
from services.common.chat_content import message_texts, unchanged, with_message_texts
from services.common.errors import Cancelled, GoblinError, InvalidArgument
from services.common.secrets import SecretGuard
from services.common.telemetry import annotate_route
from services.router.attempts import Attempts, BudgetExceeded, RetryPolicy, Tally
from services.router.budget import OK as BUDGET_OK
from services.router.budget import Budgets, BudgetStatus
from services.router.cache import ResponseCache, cache_key, cacheable
from services.router.catalog import LOCAL, Catalog
from services.router.ledger import RoutingRecord
from services.router.metrics import (
    BUDGET_REFUSALS,
    CACHE_HITS,
    COST,
    PROVIDER_LATENCY,
    REQUESTS,
    ROUTER_OVERHEAD,
    TOKENS,
    child,
)
from services.router.models import ModelInfo
from services.router.planning import DEFAULT_ALIAS, ChatCall, Plan, Planner, ProviderSet, with_defaults
from services.router.policy import Candidate
from services.router.provider_state import ProviderStates
from services.router.providers.base import CallContext, Embeddings, Provider, estimate_usage
from services.router.providers.errors import ProviderBadResponse, ProviderError

log = logging.getLogger(__name__)

__all__ = ["ChatCall", "RetryPolicy", "Route", "Routed", "RouterService", "validate_chat"]


@dataclass(frozen=True)
class Routed:
    """An answer and how it was obtained."""

    result: ChatResult
    fallback_chain: tuple[str, ...] = ()  # every model tried, in order, when more than one was
    cost_usd: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class Route:
    """The model a streamed answer comes from."""

    provider: str
    model_id: str


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    configured: bool
    circuit: str
    p50_latency_ms: float | None
    consecutive_failures: int
    base_url: str


class Ledger(Protocol):
    def record(self, record: RoutingRecord) -> None: ...


def validate_chat(call: ChatCall) -> None:
    """What the parameters' own check (when SamplingParams is made) cannot see: the model and the
    conversation."""
    if not call.model.strip() and not call.policy:
        raise InvalidArgument("model is required")
    check_messages(call.messages)


def failed_outcome(exc: GoblinError) -> str:
    """The ledger's outcome for a request that ended in ``exc`` (budget refusals are counted here)."""
    if isinstance(exc, BudgetExceeded):
        child(BUDGET_REFUSALS, exc.scope).inc()
        return "budget_exceeded"
    return "cancelled" if isinstance(exc, Cancelled) else "error"


class RouterService:
    """Chat, streams and embeddings routed to the providers, with the books kept for each request."""

    def __init__(
        self,
        catalog: Catalog,
        providers: ProviderSet,
        ledger: Ledger,
        states: ProviderStates,
        *,
        budgets: Budgets | None = None,
        cache: ResponseCache | None = None,
        retry: RetryPolicy | None = None,
        guard: SecretGuard | None = None,
    ) -> None:
        self.guard = guard
        self.providers = providers
        self.ledger = ledger
        self.states = states
        self.budgets = budgets
        self.cache = cache
        self.planner = Planner(catalog, providers, states)
        self.attempts = Attempts(catalog, providers, states, retry or RetryPolicy())
        self._background: set[asyncio.Task[None]] = set()

    # -- worker_processing: the last look before text leaves for a third party ----------------------
    async def _scan_outbound(self, texts: list[str], plan: Plan, context: CallContext) -> list[str]:
        """The texts an external provider may see. Scanned once, before any attempt, when the plan has an
        external candidate (so a block is never mistaken for a provider failure); the local model, inside
        our own walls, gets the texts as they came. A large body is scanned in a worker thread."""
        if self.guard is None or all(c.model.provider == LOCAL for c in plan.candidates):
            return texts
        return await self.guard.check_async(
            texts, tenant_id=context.tenant_id, user_hash=context.user_hash, correlation_id=context.correlation_id
        )

    async def _outbound_messages(self, call: ChatCall, plan: Plan) -> list[Message]:
        """The messages as an external provider may see them: every text scanned (content, text parts,
        tool call arguments); image URLs are not text a person wrote and are passed as they are."""
        texts = message_texts(call.messages)
        scanned = await self._scan_outbound(texts, plan, call.context)
        return call.messages if unchanged(texts, scanned) else with_message_texts(call.messages, scanned)

    # -- catalog ----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self.planner.catalog

    def set_catalog(self, catalog: Catalog) -> None:
        """Route by ``catalog`` from now on (a reload); requests already planned keep their plan."""
        self.planner.catalog = catalog
        self.attempts.catalog = catalog

    async def list_models(self) -> list[ModelInfo]:
        """Every model a request can reach now."""
        return await self.planner.list_models()

    # -- books ------------------------------------------------------------------------------------
    def _book(
        self,
        call: ChatCall,
        plan: Plan | None,
        tally: Tally,
        *,
        outcome: str,
        model: ModelInfo | None = None,
        usage: Usage | None = None,
        error_code: str = "",
        stream: bool = False,
        ttft_ms: float | None = None,
        charge: bool = True,
    ) -> float:
        """Write the ledger row, count the metrics, charge the budgets; returns the cost."""
        usage = usage or Usage()
        cost = round(model.cost_usd(usage), 10) if model is not None and charge else 0.0
        provider = model.provider if model is not None else ""
        self.ledger.record(
            RoutingRecord(
                requested_model=call.model or call.policy,
                outcome=outcome,
                provider=provider,
                model=model.model if model is not None else "",
                correlation_id=call.context.correlation_id,
                tenant_id=call.context.tenant_id,
                user_hash=call.context.user_hash,
                api_key_id=call.context.api_key_id,
                policy=plan.policy if plan else call.policy,
                stream=stream,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                latency_ms=tally.elapsed_ms(),
                ttft_ms=ttft_ms,
                error_code=error_code,
                fallback_chain=tally.chain(),
            )
        )
        child(REQUESTS, provider or "none", outcome).inc()
        annotate_route(outcome, provider, model.model if model is not None else "", usage)
        if model is not None and charge:
            if cost:
                child(COST, provider, model.model).inc(cost)
            if usage.prompt_tokens:
                child(TOKENS, provider, model.model, "prompt").inc(usage.prompt_tokens)
            if usage.completion_tokens:
                child(TOKENS, provider, model.model, "completion").inc(usage.completion_tokens)
            if self.budgets is not None:
                self.budgets.charge(call.context.tenant_id, call.context.api_key_id, cost, usage.total_tokens)
        return cost

    async def _budget(self, context: CallContext) -> BudgetStatus:
        if self.budgets is None:
            return BUDGET_OK
        try:
            status = await self.budgets.status(context)
        except Exception:
            # Redis or Postgres is down: answering beats refusing; the books still get the row.
            log.warning("budget check failed; request allowed", exc_info=True)
            return BUDGET_OK
        if not status.tokens:
            raise BudgetExceeded(status)
        return status

    def _in_background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- chat -------------------------------------------------------------------------------------
    async def chat(self, call: ChatCall) -> Routed:
        validate_chat(call)
        tally = Tally()
        plan: Plan | None = None
        key: str | None = None
        try:
            plan = await self.planner.plan(call)
            if self.cache is not None and cacheable(call.params, self.cache.ttl_s, call.bypass_cache):
                key = cache_key(
                    call.context.tenant_id,
                    sorted(c.model.id for c in plan.candidates),
                    call.messages,
                    call.params,
                    call.options,
                )
                hit = await self.cache.get(key)
                if hit is not None:
                    CACHE_HITS.inc()
                    model = await self.planner.model(hit.model)
                    self._book(call, plan, tally, outcome="cache_hit", model=model, usage=hit.usage, charge=False)
                    return Routed(replace(hit, id=new_completion_id(), created=int(time.time())), cached=True)
            budget = await self._budget(call.context)
            outbound = await self._outbound_messages(call, plan)

            async def ask(candidate: Candidate, provider: Provider) -> ChatResult:
                params = with_defaults(call.params, candidate.model)
                messages = call.messages if provider.name == LOCAL else outbound
                return await provider.chat(candidate.model, messages, params, call.context, call.options)

            candidate, result = await self.attempts.run(call, plan, tally, budget, ask)
        except GoblinError as exc:
            self._book(call, plan, tally, outcome=failed_outcome(exc), error_code=exc.code)
            raise
        except asyncio.CancelledError:
            self._book(call, plan, tally, outcome="cancelled", error_code="cancelled")
            raise
        child(PROVIDER_LATENCY, candidate.model.provider, "chat").observe(tally.provider_s)
        cost = self._book(call, plan, tally, outcome="ok", model=candidate.model, usage=result.usage)
        if key is not None and self.cache is not None:
            self._in_background(self.cache.put(key, result))
        child(ROUTER_OVERHEAD, "chat").observe(max(0.0, time.perf_counter() - tally.started - tally.provider_s))
        return Routed(result, fallback_chain=tuple(tally.chain()), cost_usd=cost)

    async def stream(self, call: ChatCall) -> AsyncIterator[tuple[Route, ChatDelta]]:
        """Deltas as the provider makes them, each with the model that produced it."""
        validate_chat(call)
        tally = Tally()
        plan: Plan | None = None
        candidate: Candidate | None = None
        deltas: AsyncIterator[ChatDelta] | None = None
        text: list[str] = []
        usage: Usage | None = None
        ttft_ms: float | None = None
        outcome, error_code = "cancelled", "cancelled"
        try:
            plan = await self.planner.plan(call)
            budget = await self._budget(call.context)
            outbound = await self._outbound_messages(call, plan)

            async def open_stream(cand: Candidate, provider: Provider) -> tuple[AsyncIterator[ChatDelta], ChatDelta]:
                # The attempt is the stream up to its first delta: that much may be retried or moved.
                params = with_defaults(call.params, cand.model)
                messages = call.messages if provider.name == LOCAL else outbound
                source = provider.stream(cand.model, messages, params, call.context, call.options)
                try:
                    first = await anext(source)
                except StopAsyncIteration:
                    raise ProviderBadResponse(provider.name, "the stream was empty") from None
                except BaseException:
                    await source.aclose()
                    raise
                return source, first

            candidate, (deltas, first) = await self.attempts.run(call, plan, tally, budget, open_stream)
            ttft_ms = tally.elapsed_ms()
            child(PROVIDER_LATENCY, candidate.model.provider, "chat_ttft").observe(ttft_ms / 1000)
            child(ROUTER_OVERHEAD, "chat_stream").observe(max(0.0, ttft_ms / 1000 - tally.provider_s))
            route = Route(candidate.model.provider, candidate.model.id)
            delta: ChatDelta | None = first
            while delta is not None:
                if delta.text:
                    text.append(delta.text)
                if delta.usage is not None:
                    usage = delta.usage
                yield route, delta
                delta = await anext(deltas, None)
            outcome, error_code = "ok", ""
        except GoblinError as exc:
            outcome, error_code = failed_outcome(exc), exc.code
            if text and candidate is not None and isinstance(exc, ProviderError):
                self.attempts.failed(candidate.model.provider, candidate.model.id, exc)  # it broke mid-stream
            raise
        finally:
            if deltas is not None:
                await deltas.aclose()  # a caller that went away stops the provider generating
            if candidate is not None and outcome == "ok":
                child(PROVIDER_LATENCY, candidate.model.provider, "chat").observe(tally.elapsed_ms() / 1000)
            if candidate is not None and usage is None:
                # Cut short: providers bill what they generated, so the books estimate it.
                usage = estimate_usage(call.messages, "".join(text))
            self._book(
                call,
                plan,
                tally,
                outcome=outcome,
                model=candidate.model if candidate else None,
                usage=usage,
                error_code=error_code,
                stream=True,
                ttft_ms=ttft_ms,
            )

    # -- embeddings -------------------------------------------------------------------------------
    async def embed(self, model_id: str, inputs: list[str], context: CallContext) -> Embeddings:
        if not inputs:
            raise InvalidArgument("input must not be empty")
        call = ChatCall(model=model_id or DEFAULT_ALIAS, messages=[], params=SamplingParams(), context=context)
        tally = Tally()
        plan: Plan | None = None
        try:
            # Vectors of different models do not mix: one model, retried, never a fallback.
            models = await self.planner.resolve(call.model, "embeddings")
            plan = Plan(strategy="explicit", policy="explicit", candidates=[self.planner.candidate(models[0], None)])
            budget = await self._budget(context)
            outbound = await self._scan_outbound(inputs, plan, context)

            async def embed(candidate: Candidate, provider: Provider) -> Embeddings:
                return await provider.embed(candidate.model, inputs if provider.name == LOCAL else outbound, context)

            candidate, result = await self.attempts.run(call, plan, tally, budget, embed)
        except GoblinError as exc:
            self._book(call, plan, tally, outcome=failed_outcome(exc), error_code=exc.code)
            raise
        child(PROVIDER_LATENCY, candidate.model.provider, "embeddings").observe(tally.provider_s)
        self._book(call, plan, tally, outcome="ok", model=candidate.model, usage=Usage(result.prompt_tokens, 0))
        return result

    # -- state ------------------------------------------------------------------------------------
    def provider_states(self) -> list[ProviderStatus]:
        statuses = []
        for provider in self.providers.all():
            breaker = self.states.worst(provider.name)  # the views show one state per provider
            statuses.append(
                ProviderStatus(
                    name=provider.name,
                    configured=provider.configured,
                    circuit=str(breaker.state),
                    p50_latency_ms=self.states.provider_p50_ms(provider.name),
                    consecutive_failures=breaker.consecutive_failures,
                    base_url=self.providers.base_url(provider.name),
                )
            )
        return statuses

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
