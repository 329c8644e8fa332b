"""Which models a request may go to, in which order: the catalog's and the local inference service's
models, aliases and named policies resolved into a *plan* of candidates.

The routing policy orders the primary candidates; the request's own fallbacks follow, each once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

from services.common.chat import Message, SamplingParams
from services.common.chat_content import NO_OPTIONS, ChatOptions, required_capabilities
from services.common.errors import InvalidArgument, NotFound
from services.router.capabilities import refusal, serves
from services.router.catalog import LOCAL, Catalog, PolicySpec
from services.router.models import ModelInfo
from services.router.policy import STRATEGIES, Candidate, order
from services.router.provider_state import ProviderStates
from services.router.providers.base import CallContext, Provider, estimate_tokens

log = logging.getLogger(__name__)

DEFAULT_ALIAS = LOCAL  # what an empty model means: the local model


@dataclass(frozen=True)
class ChatCall:
    """A chat request as the router sees it, once translated from the wire."""

    model: str
    messages: list[Message]
    params: SamplingParams
    context: CallContext
    policy: str = ""  # a strategy or a named policy; empty: the tenant's default, else explicit
    fallbacks: tuple[str, ...] = ()
    bypass_cache: bool = False
    options: ChatOptions = NO_OPTIONS  # tools, tool choice, response format (services.common.chat_content)

    @property
    def needs(self) -> frozenset[str]:
        """The capabilities a model must have to serve this call (tools, json, vision, ...)."""
        return required_capabilities(self.options, self.messages, self.params)


@dataclass
class Plan:
    """A request's candidates in the order they are tried."""

    strategy: str
    policy: str  # what the books call it: a policy name or a strategy
    candidates: list[Candidate]


class ProviderSet(Protocol):
    """The provider adapters by name (the registry)."""

    def get(self, name: str) -> Provider | None: ...
    def all(self) -> list[Provider]: ...
    def base_url(self, name: str) -> str: ...


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


class Planner:
    """Resolves model names, lists the models a request can reach, and plans a request's candidates."""

    def __init__(self, catalog: Catalog, providers: ProviderSet, states: ProviderStates) -> None:
        self.catalog = catalog
        self.providers = providers
        self.states = states

    async def dynamic_models(self) -> list[ModelInfo]:
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
        return [*models, *await self.dynamic_models()]

    async def model(self, model_id: str) -> ModelInfo | None:
        found = self.catalog.models.get(model_id)
        if found is not None:
            return found
        if model_id.split("/", 1)[0] == LOCAL:
            for info in await self.dynamic_models():
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
            found += [m for m in await self.dynamic_models() if wanted in m.aliases]
            if not found:
                raise NotFound(f"model '{wanted}' not found", code="model_not_found")
        usable = [m for m in found if capability in m.capabilities]
        if not usable:
            raise InvalidArgument(f"model '{wanted}' does not support {capability}")
        return usable

    async def plan(self, call: ChatCall, capability: str = "chat") -> Plan:
        """The candidates of ``call`` in the order they are tried."""
        tenant = call.context.tenant_id
        needed = call.needs if capability == "chat" else frozenset()
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
            able = [m for m in primary if serves(m, needed)]
            if not able:
                raise refusal(primary, needed, f"policy {named.name}")
            primary = able
            weights = dict(zip(named.models, named.weights, strict=False))
        else:
            wanted = call.model or DEFAULT_ALIAS
            resolved = await self.resolve(wanted, capability)
            # An alias may name models of different abilities: keep those that serve the request.
            primary = [m for m in resolved if serves(m, needed)]
            if not primary:
                raise refusal(resolved, needed, wanted)
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
            [self.candidate(m, weights.get(m.id)) for m in primary],
            prompt_tokens=sum(estimate_tokens(m.content) for m in call.messages),
            max_tokens=call.params.max_tokens,
            latency=lambda m: self.states.latency_p50(m.id, m.provider),
        )
        seen = {c.model.id for c in candidates}
        for fallback in call.fallbacks:
            for model in await self.resolve(fallback, capability):
                # A fallback that could not serve the request is no fallback: skipped, not an error.
                if model.id not in seen and serves(model, needed):
                    seen.add(model.id)
                    candidates.append(self.candidate(model, None))
        return Plan(strategy=strategy, policy=named.name if named else strategy, candidates=candidates)

    async def smallest_context(self, call: ChatCall) -> int:
        """The smallest context window (tokens) among the models ``call`` may go to; 0 when none says.
        What must fit every candidate (retrieved passages) is budgeted by it."""
        plan = await self.plan(call)
        return min((c.model.context_length for c in plan.candidates if c.model.context_length), default=0)

    async def _policy_member(self, policy: PolicySpec, member: str, capability: str) -> ModelInfo | None:
        info = await self.model(member)
        if info is None:
            log.warning("policy %s names unknown model %s; skipped", policy.name, member)
            return None
        return info if capability in info.capabilities else None

    def candidate(self, model: ModelInfo, weight: float | None) -> Candidate:
        spec = self.catalog.providers.get(model.provider)
        return Candidate(
            model=model,
            priority=spec.priority if spec else 100,
            weight=float(weight if weight is not None else (spec.weight if spec else 1)),
        )
