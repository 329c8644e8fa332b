"""The attempt loop: a plan's candidates tried in turn until one answers.

Each candidate is skipped without a call when its provider has no key, its circuit (the provider's or
the model deployment's) is open, the prompt cannot fit its context, or a dollar budget is spent and the
model is not free. A call that fails with a retryable error is repeated at the same provider with
jittered exponential backoff (tenacity); one that fails otherwise, or runs out of retries, moves the
request to the next candidate unless the failure was the caller's own. A failure whose Retry-After is
longer than a retry would wait cools the deployment for at least that long. Every call keeps the
provider's books: breakers, latency, error counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from services.common.errors import GoblinError, InvalidArgument, NotFound, ResourceExhausted
from services.common.telemetry import annotate_usage, provider_attributes, span
from services.router.breaker import CircuitBreaker
from services.router.budget import BudgetStatus
from services.router.catalog import Catalog
from services.router.metrics import FALLBACKS, PROVIDER_ERRORS, RETRIES, child
from services.router.planning import ChatCall, Plan, ProviderSet
from services.router.policy import Candidate
from services.router.provider_state import ProviderStates
from services.router.providers.base import Provider, estimate_tokens
from services.router.providers.errors import (
    CircuitOpen,
    ProviderBadResponse,
    ProviderNotConfigured,
    failure_policy,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a provider is asked again after a retryable failure, and how long between."""

    retries: int = 2
    base_s: float = 0.2
    max_s: float = 4.0


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


class BudgetExceeded(ResourceExhausted):
    """A tenant's or key's daily budget is spent (tokens: refused outright; dollars: paid models skipped)."""

    code = "budget_exceeded"

    def __init__(self, status: BudgetStatus) -> None:
        super().__init__(f"budget exceeded: {status.reason}; it resets at midnight UTC", retry_after=status.retry_after)
        self.scope = status.scope


class Attempts:
    """Runs a plan: skips, calls, retries and moves on, keeping each provider's state."""

    def __init__(self, catalog: Catalog, providers: ProviderSet, states: ProviderStates, retry: RetryPolicy) -> None:
        self.catalog = catalog
        self.providers = providers
        self.states = states
        self.retry = retry

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
        breaker = self.states.blocking(model.provider, model.id)
        if breaker is not None:
            return circuit_open(breaker)
        return None

    def _retryable(self, model_id: str, provider: str, exc: BaseException) -> bool:
        """Worth asking the same provider again: a retryable error, closed circuits, and no Retry-After
        longer than we would wait anyway (then the next candidate is the better bet)."""
        if not failure_policy(exc).retryable or not self.states.closed(provider, model_id):
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
        provider, model_id = candidate.model.provider, candidate.model.id
        try:
            return await self._call(candidate, tally, call_once)
        except GoblinError as exc:
            if self.retry.retries == 0 or not self._retryable(model_id, provider, exc):
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
            retry=retry_if_exception(lambda exc: self._retryable(model_id, provider, exc)),
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
            with span("provider call", provider_attributes(provider.name, model.id)) as s:
                result = await fn(provider)
                annotate_usage(s, getattr(result, "usage", None))
        except GoblinError as exc:
            tally.provider_s += time.perf_counter() - started
            self.failed(provider.name, model.id, exc)
            raise
        except asyncio.CancelledError:
            self.states.release(provider.name, model.id)
            raise
        except Exception as exc:
            tally.provider_s += time.perf_counter() - started
            log.exception("%s adapter failed on %s", provider.name, model.id)
            error = ProviderBadResponse(provider.name, f"unexpected answer ({type(exc).__name__})")
            self.failed(provider.name, model.id, error)
            raise error from exc
        latency = time.perf_counter() - started
        tally.provider_s += latency
        self.states.success(provider.name, model.id, latency)
        return result

    def failed(self, provider: str, model_id: str, exc: GoblinError) -> None:
        """Count a failed call against the right circuit: the provider's when no connection was made,
        else the deployment's, opened at once for a Retry-After longer than a retry would wait."""
        child(PROVIDER_ERRORS, provider, exc.code).inc()
        policy = failure_policy(exc)
        if not policy.breaker:
            self.states.release(provider, model_id)
            return
        hint = getattr(exc, "retry_after", None)
        hold = hint if hint is not None and hint > self.retry.max_s else None
        if policy.provider_wide:
            self.states.breaker(provider, model_id).release()  # a probe it reserved goes to the next caller
            self.states.failure(provider, hold_s=hold)
        else:
            self.states.failure(provider, model_id, hold_s=hold)

    async def run(
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
        raise self.exhausted(plan, tally)

    def exhausted(self, plan: Plan, tally: Tally) -> GoblinError:
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


def circuit_open(breaker: CircuitBreaker) -> CircuitOpen:
    """The refusal for a cooling circuit: which provider (and model), why, and when it is tried again."""
    wait = breaker.retry_after()
    what = f"circuit open for {breaker.model}" if breaker.model else "circuit open for every model"
    if breaker.held:
        why = f"the provider asked to wait {math.ceil(breaker.open_for)} s"
    else:
        why = f"{breaker.consecutive_failures} consecutive failures"
    return CircuitOpen(breaker.provider, f"{what} after {why}; tried again in {math.ceil(wait)} s", retry_after=wait)
