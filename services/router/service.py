"""Routing logic: which provider answers, retries and fallbacks, and the books. No gRPC here.

A request becomes a *plan*: its candidate models in the order the routing policy chooses, then the
request's own fallbacks. Candidates are tried in turn; each is skipped without a call when its
provider has no key, its circuit is open, the prompt cannot fit its context, or a dollar budget is
spent and the model is not free. A call that fails with a retryable error is repeated at the same
provider with jittered exponential backoff (tenacity); one that fails otherwise, or runs out of
retries, moves the request to the next candidate unless the failure was the caller's own. A stream
is only moved before its first token: once text has reached the caller, a failure ends the stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from services.common.chat import (
    ROLES,
    ChatDelta,
    ChatResult,
    Message,
    SamplingParams,
    Usage,
    new_completion_id,
)
from services.common.errors import Cancelled, GoblinError, InvalidArgument, NotFound, ResourceExhausted
from services.common.secrets import SecretGuard
from services.router.breaker import CircuitState
from services.router.budget import OK as BUDGET_OK
from services.router.budget import Budgets, BudgetStatus
from services.router.cache import ResponseCache, cache_key, cacheable
from services.router.catalog import LOCAL, Catalog, PolicySpec
from services.router.ledger import RoutingRecord
from services.router.metrics import (
    BUDGET_REFUSALS,
    CACHE_HITS,
    COST,
    FALLBACKS,
    PROVIDER_ERRORS,
    PROVIDER_LATENCY,
    REQUESTS,
    RETRIES,
    ROUTER_OVERHEAD,
    TOKENS,
    child,
)
from services.router.policy import STRATEGIES, Candidate, order
from services.router.provider_state import ProviderStates
from services.router.providers.base import (
    CallContext,
    Embeddings,
    ModelInfo,
    Provider,
    estimate_tokens,
    estimate_usage,
)
from services.router.providers.errors import (
    CircuitOpen,
    ProviderBadResponse,
    ProviderError,
    ProviderNotConfigured,
    failure_policy,
)

log = logging.getLogger(__name__)

DEFAULT_ALIAS = LOCAL  # what an empty model means: the local model
T = TypeVar("T")


@dataclass(frozen=True)
class ChatCall:
    model: str
    messages: list[Message]
    params: SamplingParams
    context: CallContext
    policy: str = ""  # a strategy or a named policy; empty: the tenant's default, else explicit
    fallbacks: tuple[str, ...] = ()
    bypass_cache: bool = False


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


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    base_s: float = 0.2
    max_s: float = 4.0


@dataclass
class Plan:
    strategy: str
    policy: str  # what the books call it: a policy name or a strategy
    candidates: list[Candidate]


@dataclass
class Tally:
    """What happened to one request, for the books and the overhead metric."""

    started: float = field(default_factory=time.perf_counter)
    provider_s: float = 0.0
    route: list[str] = field(default_factory=list)  # models called, or passed over for an open circuit
    skipped: list[GoblinError] = field(default_factory=list)
    failures: list[GoblinError] = field(default_factory=list)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def chain(self) -> list[str]:
        return list(self.route) if len(self.route) > 1 else []


class Ledger(Protocol):
    def record(self, record: RoutingRecord) -> None: ...


class ProviderSet(Protocol):
    def get(self, name: str) -> Provider | None: ...
    def all(self) -> list[Provider]: ...
    def base_url(self, name: str) -> str: ...


def validate_chat(call: ChatCall) -> None:
    if not call.model.strip() and not call.policy:
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


def with_defaults(params: SamplingParams, model: ModelInfo) -> SamplingParams:
    """The model's catalog defaults for whatever the request left unset."""
    if not model.default_params:
        return params
    changes: dict[str, Any] = {}
    for key, value in model.default_params.items():
        if key == "stop":
            if not params.stop:
                changes["stop"] = tuple(value)
        elif getattr(params, key) is None:
            changes[key] = value
    return replace(params, **changes) if changes else params


class BudgetExceeded(ResourceExhausted):
    code = "budget_exceeded"

    def __init__(self, status: BudgetStatus) -> None:
        super().__init__(f"budget exceeded: {status.reason}; it resets at midnight UTC", retry_after=status.retry_after)
        self.scope = status.scope


def failed_outcome(exc: GoblinError) -> str:
    """The ledger's outcome for a request that ended in ``exc`` (budget refusals are counted here)."""
    if isinstance(exc, BudgetExceeded):
        child(BUDGET_REFUSALS, exc.scope).inc()
        return "budget_exceeded"
    return "cancelled" if isinstance(exc, Cancelled) else "error"


class RouterService:
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
        self.catalog = catalog
        self.guard = guard
        self.providers = providers
        self.ledger = ledger
        self.states = states
        self.budgets = budgets
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self._background: set[asyncio.Task[None]] = set()

    # -- worker_processing: the last look before text leaves for a third party ----------------------
    def _scan_outbound(self, texts: list[str], plan: Plan, context: CallContext) -> list[str]:
        """The texts an external provider may see. Scanned once, before any attempt, when the plan has an
        external candidate (so a block is never mistaken for a provider failure); the local model, inside
        our own walls, gets the texts as they came."""
        if self.guard is None or all(c.model.provider == LOCAL for c in plan.candidates):
            return texts
        return self.guard.check(
            texts, tenant_id=context.tenant_id, user_hash=context.user_hash, correlation_id=context.correlation_id
        )

    def _outbound_messages(self, call: ChatCall, plan: Plan) -> list[Message]:
        texts = self._scan_outbound([m.content for m in call.messages], plan, call.context)
        return [replace(m, content=t) if t is not m.content else m for m, t in zip(call.messages, texts, strict=True)]

    # -- catalog ----------------------------------------------------------------------------------
    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def _dynamic_models(self) -> list[ModelInfo]:
        """Models a provider announces itself: the local inference service's."""
        local = self.providers.get(LOCAL)
        return await local.list_models() if local is not None else []

    async def list_models(self) -> list[ModelInfo]:
        """Every model a request can reach now: the catalog's for configured providers, and local."""
        models = []
        for model in self.catalog.models.values():
            provider = self.providers.get(model.provider)
            if provider is not None and provider.configured:
                models.append(model)
        return [*models, *await self._dynamic_models()]

    async def model(self, model_id: str) -> ModelInfo | None:
        found = self.catalog.models.get(model_id)
        if found is not None:
            return found
        if model_id.split("/", 1)[0] == LOCAL:
            for info in await self._dynamic_models():
                if info.id == model_id:
                    return info
        return None

    async def resolve(self, wanted: str, capability: str) -> list[ModelInfo]:
        """``<provider>/<model>`` or an alias (the catalog's or the local models') -> models."""
        wanted = wanted.strip()
        if "/" in wanted:
            provider = wanted.split("/", 1)[0]
            if self.providers.get(provider) is None:
                raise NotFound(f"model '{wanted}' not found: no provider '{provider}'", code="model_not_found")
            info = await self.model(wanted)
            if info is None:
                raise NotFound(
                    f"model '{wanted}' is not in the catalog (add it with GOBLIN_CATALOG_FILE or a model_configs row)",
                    code="model_not_found",
                )
            found = [info]
        else:
            found = [self.catalog.models[i] for i in self.catalog.alias(wanted)]
            found += [m for m in await self._dynamic_models() if wanted in m.aliases]
            if not found:
                raise NotFound(f"model '{wanted}' not found", code="model_not_found")
        usable = [m for m in found if capability in m.capabilities]
        if not usable:
            raise InvalidArgument(f"model '{wanted}' does not support {capability}")
        return usable

    async def plan(self, call: ChatCall, capability: str = "chat") -> Plan:
        """The candidates of ``call`` in the order they are tried."""
        tenant = call.context.tenant_id
        named: PolicySpec | None = None
        if call.policy and call.policy not in STRATEGIES:
            named = self.catalog.policy(call.policy, tenant)
            if named is None:
                known = sorted(p.name for p in self.catalog.policies.values() if p.visible_to(tenant))
                raise InvalidArgument(
                    f"unknown routing policy '{call.policy}'; strategies: {list(STRATEGIES)}, policies: {known}"
                )
        elif call.model:
            named = self.catalog.policy(call.model, tenant)  # a policy may be asked for as the model
        if named is not None:
            primary = [await self._policy_member(named, member, capability) for member in named.models]
            primary = [m for m in primary if m is not None]
            if not primary:
                raise NotFound(f"policy '{named.name}' has no model that supports {capability}", code="model_not_found")
            weights = dict(zip(named.models, named.weights, strict=False))
        else:
            primary = await self.resolve(call.model or DEFAULT_ALIAS, capability)
            weights = {}
        if call.policy in STRATEGIES:
            strategy = call.policy
        elif named is not None:
            strategy = named.strategy
        else:
            default = self.catalog.default_policy(tenant)
            strategy = default.strategy if default is not None else "explicit"
        candidates = order(
            strategy,
            [self._candidate(m, weights.get(m.id)) for m in primary],
            prompt_tokens=sum(estimate_tokens(m.content) for m in call.messages),
            max_tokens=call.params.max_tokens,
            latency=lambda m: self.states.latency_p50(m.id, m.provider),
        )
        seen = {c.model.id for c in candidates}
        for fallback in call.fallbacks:
            for model in await self.resolve(fallback, capability):
                if model.id not in seen:
                    seen.add(model.id)
                    candidates.append(self._candidate(model, None))
        return Plan(strategy=strategy, policy=named.name if named else strategy, candidates=candidates)

    async def _policy_member(self, policy: PolicySpec, member: str, capability: str) -> ModelInfo | None:
        info = await self.model(member)
        if info is None:
            log.warning("policy %s names unknown model %s; skipped", policy.name, member)
            return None
        return info if capability in info.capabilities else None

    def _candidate(self, model: ModelInfo, weight: float | None) -> Candidate:
        spec = self.catalog.providers.get(model.provider)
        return Candidate(
            model=model,
            priority=spec.priority if spec else 100,
            weight=float(weight if weight is not None else (spec.weight if spec else 1)),
        )

    # -- attempts ---------------------------------------------------------------------------------
    def _skip_reason(self, candidate: Candidate, call_tokens: int, budget: BudgetStatus) -> GoblinError | None:
        """Why ``candidate`` cannot be called now, or None. Checks that reserve a half-open probe come
        last, so a skipped candidate never holds one."""
        model = candidate.model
        provider = self.providers.get(model.provider)
        if provider is None or not provider.configured:
            spec = self.catalog.providers.get(model.provider)
            variable = spec.api_key_env if spec else f"{model.provider.upper()}_API_KEY"
            return ProviderNotConfigured(model.provider, f"not configured: set {variable} to use {model.id}")
        if not budget.money and model.paid:
            return BudgetExceeded(budget)
        if model.context_length and call_tokens > model.context_length:
            return InvalidArgument(
                f"the prompt (about {call_tokens} tokens) does not fit {model.id}'s context of "
                f"{model.context_length} tokens",
                code="context_length_exceeded",
            )
        breaker = self.states.breaker(model.provider)
        if not breaker.allow():
            return CircuitOpen(
                model.provider,
                f"circuit open after {breaker.consecutive_failures} consecutive failures",
                retry_after=breaker.retry_after(),
            )
        return None

    def _retryable(self, provider: str, exc: BaseException) -> bool:
        """Worth asking the same provider again: a retryable error, a closed circuit, and no Retry-After
        longer than we would wait anyway (then the next candidate is the better bet)."""
        if not failure_policy(exc).retryable or self.states.breaker(provider).state is not CircuitState.closed:
            return False
        hint = getattr(exc, "retry_after", None)
        return hint is None or hint <= self.retry.max_s

    def _backoff(self, retry: int, exc: BaseException | None) -> float:
        """Exponential backoff with full jitter (uniform in [0, min(max, base * 2**retry)]), and never
        sooner than the provider's Retry-After."""
        ceiling = min(self.retry.max_s, self.retry.base_s * 2**retry)
        return max(random.uniform(0, ceiling), getattr(exc, "retry_after", None) or 0.0)

    async def _with_retries(
        self, candidate: Candidate, tally: Tally, call_once: Callable[[Provider], Awaitable[T]]
    ) -> T:
        """The first attempt runs bare, so the common case pays nothing for retrying; after a retryable
        failure tenacity drives the remaining attempts."""
        provider = candidate.model.provider
        try:
            return await self._call(candidate, tally, call_once)
        except GoblinError as exc:
            if self.retry.retries == 0 or not self._retryable(provider, exc):
                raise
            first_failure = exc

        async def sleep(seconds: float) -> None:
            child(RETRIES, provider).inc()
            tally.provider_s += seconds  # waiting for the provider is not the router's own time
            await asyncio.sleep(seconds)

        await sleep(self._backoff(0, first_failure))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.retries),
            wait=lambda state: self._backoff(
                state.attempt_number, state.outcome.exception() if state.outcome is not None else None
            ),
            retry=retry_if_exception(lambda exc: self._retryable(provider, exc)),
            sleep=sleep,
            reraise=True,
        )
        return await retrying(self._call, candidate, tally, call_once)

    async def _call(self, candidate: Candidate, tally: Tally, fn: Callable[[Provider], Awaitable[T]]) -> T:
        """One provider call with its bookkeeping: breaker, latency, error counts."""
        model = candidate.model
        provider = self.providers.get(model.provider)
        assert provider is not None
        started = time.perf_counter()
        try:
            result = await fn(provider)
        except GoblinError as exc:
            tally.provider_s += time.perf_counter() - started
            self._failed(provider.name, exc)
            raise
        except asyncio.CancelledError:
            self.states.breaker(provider.name).release()
            raise
        except Exception as exc:
            tally.provider_s += time.perf_counter() - started
            log.exception("%s adapter failed on %s", provider.name, model.id)
            error = ProviderBadResponse(provider.name, f"unexpected answer ({type(exc).__name__})")
            self._failed(provider.name, error)
            raise error from exc
        latency = time.perf_counter() - started
        tally.provider_s += latency
        self.states.success(provider.name, model.id, latency)
        return result

    def _failed(self, provider: str, exc: GoblinError) -> None:
        child(PROVIDER_ERRORS, provider, exc.code).inc()
        if failure_policy(exc).breaker:
            self.states.failure(provider)
        else:
            self.states.breaker(provider).release()

    async def _attempts(
        self,
        call: ChatCall,
        plan: Plan,
        tally: Tally,
        budget: BudgetStatus,
        fn: Callable[[Candidate, Provider], Awaitable[T]],
    ) -> tuple[Candidate, T]:
        """Try the plan's candidates in turn until one answers; retries inside each."""
        call_tokens = sum(estimate_tokens(m.content) + 4 for m in call.messages) + (call.params.max_tokens or 0)
        moved_from = ""  # the provider a failure or an open circuit moved the request away from
        for candidate in plan.candidates:
            reason = self._skip_reason(candidate, call_tokens, budget)
            if reason is not None:
                tally.skipped.append(reason)
                if isinstance(reason, CircuitOpen):
                    tally.route.append(candidate.model.id)
                    moved_from = moved_from or candidate.model.provider
                continue
            if moved_from:
                child(FALLBACKS, moved_from, candidate.model.provider).inc()
            tally.route.append(candidate.model.id)
            moved_from = ""
            try:
                result = await self._with_retries(candidate, tally, lambda p, c=candidate: fn(c, p))
            except GoblinError as exc:
                tally.failures.append(exc)
                if not failure_policy(exc).fallback:
                    raise
                moved_from = candidate.model.provider
                log.info(
                    "%s failed (%s); trying the next candidate",
                    candidate.model.id,
                    exc.code,
                    extra={"provider": candidate.model.provider, "error_code": exc.code},
                )
                continue
            return candidate, result
        raise self._exhausted(plan, tally)

    def _exhausted(self, plan: Plan, tally: Tally) -> GoblinError:
        """The error that best explains why no candidate answered."""
        if tally.failures:
            return tally.failures[-1]
        for kind in (BudgetExceeded, CircuitOpen, InvalidArgument, ProviderNotConfigured):
            matching = [e for e in tally.skipped if isinstance(e, kind)]
            if matching:
                if kind is CircuitOpen:
                    return min(matching, key=lambda e: e.retry_after or 0.0)
                return matching[0]
        return NotFound("no model to route to", code="model_not_found")

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
            plan = await self.plan(call)
            if self.cache is not None and cacheable(call.params, self.cache.ttl_s, call.bypass_cache):
                key = cache_key(
                    call.context.tenant_id,
                    sorted(c.model.id for c in plan.candidates),
                    call.messages,
                    call.params,
                )
                hit = await self.cache.get(key)
                if hit is not None:
                    CACHE_HITS.inc()
                    model = await self.model(hit.model)
                    self._book(call, plan, tally, outcome="cache_hit", model=model, usage=hit.usage, charge=False)
                    return Routed(replace(hit, id=new_completion_id(), created=int(time.time())), cached=True)
            budget = await self._budget(call.context)
            outbound = self._outbound_messages(call, plan)

            async def ask(candidate: Candidate, provider: Provider) -> ChatResult:
                params = with_defaults(call.params, candidate.model)
                messages = call.messages if provider.name == LOCAL else outbound
                return await provider.chat(candidate.model, messages, params, call.context)

            candidate, result = await self._attempts(call, plan, tally, budget, ask)
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
            plan = await self.plan(call)
            budget = await self._budget(call.context)
            outbound = self._outbound_messages(call, plan)

            async def open_stream(cand: Candidate, provider: Provider) -> tuple[AsyncIterator[ChatDelta], ChatDelta]:
                # The attempt is the stream up to its first delta: that much may be retried or moved.
                params = with_defaults(call.params, cand.model)
                messages = call.messages if provider.name == LOCAL else outbound
                source = provider.stream(cand.model, messages, params, call.context)
                try:
                    first = await anext(source)
                except StopAsyncIteration:
                    raise ProviderBadResponse(provider.name, "the stream was empty") from None
                except BaseException:
                    await source.aclose()
                    raise
                return source, first

            candidate, (deltas, first) = await self._attempts(call, plan, tally, budget, open_stream)
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
            if text and candidate is not None and isinstance(exc, ProviderError) and failure_policy(exc).breaker:
                self.states.failure(candidate.model.provider)  # it broke mid-stream
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
            models = await self.resolve(call.model, "embeddings")
            plan = Plan(strategy="explicit", policy="explicit", candidates=[self._candidate(models[0], None)])
            budget = await self._budget(context)
            outbound = self._scan_outbound(inputs, plan, context)

            async def embed(candidate: Candidate, provider: Provider) -> Embeddings:
                return await provider.embed(candidate.model, inputs if provider.name == LOCAL else outbound, context)

            candidate, result = await self._attempts(call, plan, tally, budget, embed)
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
            breaker = self.states.breaker(provider.name)
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
