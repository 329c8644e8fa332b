"""The provider adapters the router can call, built from the catalog and the settings.

Adapters (and their pooled HTTP clients) are built once and kept; a catalog refresh rebuilds only the
providers whose definition, key or address changed, and closes the replaced ones after a grace period
so calls already under way finish on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.router.catalog import LOCAL, Catalog, ProviderSpec
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.base import Provider
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpOptions, HttpProvider
from services.router.providers.openai import OpenAICompatibleProvider

log = logging.getLogger(__name__)

RETIRE_AFTER_S = 300.0


def build_provider(spec: ProviderSpec, api_key: str | None, base_url: str, options: HttpOptions) -> HttpProvider:
    headers = dict(spec.headers)
    if spec.kind == "anthropic":
        return AnthropicProvider(spec.name, base_url, api_key, options, http2=spec.http2, headers=headers)
    if spec.kind == "gemini":
        return GeminiProvider(spec.name, base_url, api_key, options, http2=spec.http2, headers=headers)
    return OpenAICompatibleProvider(
        spec.name,
        base_url,
        api_key,
        options,
        max_tokens_field=spec.max_tokens_field,
        stream_usage=spec.stream_usage,
        http2=spec.http2,
        headers=headers,
    )


class ProviderRegistry:
    def __init__(
        self,
        *,
        key_for: Callable[[ProviderSpec], str | None],
        base_url_for: Callable[[ProviderSpec], str],
        options: HttpOptions,
        local: Provider | None = None,
        local_address: str = "",
    ) -> None:
        self.key_for = key_for
        self.base_url_for = base_url_for
        self.options = options
        self.local = local
        self.local_address = local_address
        self._http: dict[str, HttpProvider] = {}
        self._made_from: dict[str, tuple[ProviderSpec, str | None, str]] = {}
        self._retiring: dict[asyncio.Task[None], HttpProvider] = {}

    def sync(self, catalog: Catalog) -> None:
        """Make the adapters match ``catalog``."""
        for name in list(self._http):
            if name not in catalog.providers:
                self._retire(self._http.pop(name))
                del self._made_from[name]
        for name, spec in catalog.providers.items():
            if spec.kind == LOCAL:
                continue  # the inference service's channel belongs to the server
            made_from = (spec, self.key_for(spec), self.base_url_for(spec))
            if self._made_from.get(name) == made_from:
                continue
            old = self._http.get(name)
            self._http[name] = build_provider(spec, made_from[1], made_from[2], self.options)
            self._made_from[name] = made_from
            if old is not None:
                self._retire(old)
            log.info(
                "provider %s (%s) at %s: %s",
                name,
                spec.kind,
                made_from[2],
                "configured" if made_from[1] else "no API key, not routable",
            )

    def get(self, name: str) -> Provider | None:
        if self.local is not None and name == self.local.name:
            return self.local
        return self._http.get(name)

    def all(self) -> list[Provider]:
        return [*([self.local] if self.local is not None else []), *self._http.values()]

    def base_url(self, name: str) -> str:
        if self.local is not None and name == self.local.name:
            return f"grpc://{self.local_address}" if self.local_address else ""
        made_from = self._made_from.get(name)
        return made_from[2] if made_from else ""

    def _retire(self, provider: HttpProvider) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRE_AFTER_S)
            await provider.aclose()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # no running loop, so no call can be using it
            return
        self._retiring[task] = provider
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def aclose(self) -> None:
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        await asyncio.gather(*(t for t, _ in retiring), return_exceptions=True)
        providers = [*self._http.values(), *(p for _, p in retiring)]
        await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)
        if self.local is not None:
            await self.local.aclose()
