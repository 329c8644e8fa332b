"""The response cache: identical non-streaming requests at temperature 0 answered from Redis.

On when ``LLM_CACHE_TTL`` > 0; a request skips it with ``Cache-Control: no-cache`` (the gateway sets
``RoutingOptions.bypass_cache``). The key covers the tenant, the models the request may be answered
by, the messages (with their content parts and tool calls), every sampling parameter and the tools
and response format, so two requests share an answer only when any provider would have been asked
exactly the same thing. An answer with logprobs is never cached (they are per generation). The cache
is best effort: a Redis failure is counted and the request goes to a provider.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from services.common.chat import ChatResult, Message, SamplingParams, Usage
from services.common.chat_content import NO_OPTIONS, ChatOptions, ToolCall
from services.router.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)

KEY_PREFIX = "goblin:router:cache:v2:"


def cacheable(params: SamplingParams, ttl_s: int, bypass: bool) -> bool:
    """Only deterministic requests: temperature explicitly 0."""
    return ttl_s > 0 and not bypass and params.temperature == 0 and not params.logprobs


def cache_key(
    tenant_id: str,
    model_ids: list[str],
    messages: list[Message],
    params: SamplingParams,
    options: ChatOptions = NO_OPTIONS,
) -> str:
    fmt = options.response_format
    material = json.dumps(
        [
            tenant_id,
            model_ids,
            [
                [
                    m.role,
                    m.name,
                    m.content,
                    [asdict(p) for p in m.parts],
                    m.tool_call_id,
                    [asdict(c) for c in m.tool_calls],
                ]
                for m in messages
            ],
            asdict(params),
            [[t.name, t.description, t.parameters, t.strict] for t in options.tools],
            options.tool_choice and asdict(options.tool_choice),
            options.parallel_tool_calls,
            fmt and [fmt.type, fmt.name, fmt.schema, fmt.strict],
        ],
        separators=(",", ":"),
        ensure_ascii=False,
        default=list,
    )
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


class ResponseCache:
    def __init__(self, redis: Callable[[], Any], ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def get(self, key: str) -> ChatResult | None:
        try:
            raw = await self._redis().get(key)
        except Exception:
            CACHE_ERRORS.inc()
            log.warning("response cache read failed", exc_info=True)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return ChatResult(
                text=data["text"],
                finish_reason=data["finish_reason"],
                usage=Usage(**data["usage"]),
                model=data["model"],
                provider=data["provider"],
                tool_calls=tuple(ToolCall(**c) for c in data.get("tool_calls", ())),
            )
        except (ValueError, KeyError, TypeError):
            CACHE_ERRORS.inc()
            log.warning("response cache entry %s is unreadable; ignored", key)
            return None

    async def put(self, key: str, result: ChatResult) -> None:
        value = json.dumps(
            {
                "text": result.text,
                "finish_reason": result.finish_reason,
                "usage": asdict(result.usage),
                "model": result.model,
                "provider": result.provider,
                "tool_calls": [asdict(c) for c in result.tool_calls],
            }
        )
        try:
            await self._redis().set(key, value, ex=self.ttl_s)
        except Exception:
            CACHE_ERRORS.inc()
            log.warning("response cache write failed", exc_info=True)
