"""What every HTTP provider adapter shares: one pooled client per provider, JSON and SSE over it, and
HTTP failures turned into typed :mod:`~services.router.providers.errors`.

HTTP/2 is used where the provider offers it (TLS with ALPN) and the ``h2`` package is installed;
otherwise HTTP/1.1 with keep-alive.
"""

from __future__ import annotations

import email.utils
import importlib.util
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from services.router.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderModelNotFound,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

HTTP2_AVAILABLE = importlib.util.find_spec("h2") is not None
# httpx logs every request at INFO: a formatted log line per provider call is cost and noise on the hot
# path; the router's own metrics and ledger say what happened.
logging.getLogger("httpx").setLevel(logging.WARNING)
MAX_ERROR_MESSAGE = 300
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


@dataclass(frozen=True)
class HttpOptions:
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    max_connections: int = 100


def make_client(
    base_url: str,
    options: HttpOptions,
    *,
    http2: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one pooled client of a provider, kept for the life of the process. ``transport`` replaces
    the network (tests)."""
    return httpx.AsyncClient(
        transport=transport,
        base_url=base_url.rstrip("/"),
        http2=http2 and HTTP2_AVAILABLE and base_url.startswith("https://"),
        timeout=httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s, pool=options.timeout_s),
        limits=httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_connections,
            keepalive_expiry=60,
        ),
        follow_redirects=False,
    )


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or OpenAI's ``retry-after-ms``, in seconds."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(body: bytes) -> str:
    """The human message of a provider's error body, whichever of the usual shapes it has:
    OpenAI ``{"error": {"message"}}``, Anthropic ``{"type": "error", "error": {"message"}}``, Gemini
    ``{"error": {"code", "message", "status"}}``, or a plain ``{"message"}`` / ``{"detail"}``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:MAX_ERROR_MESSAGE] or "no error message"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini streaming endpoints wrap errors in a list
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("type") or error.get("status")
        elif isinstance(error, str):
            message = error
        message = message or data.get("message") or data.get("detail")
    text = message if isinstance(message, str) else json.dumps(data)[:MAX_ERROR_MESSAGE]
    return text[:MAX_ERROR_MESSAGE]


def error_from_response(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """A typed error for a non-2xx answer."""
    message = error_message(body)
    if status in (401, 403):
        # Never echo what the provider says about a key: some quote part of it.
        return ProviderAuthError(
            provider, f"the provider refused the configured API key (HTTP {status})", http_status=status
        )
    if status == 429:
        return ProviderRateLimited(
            provider,
            f"rate limited (HTTP 429): {message}",
            retry_after=retry_after_seconds(headers),
            http_status=status,
        )
    if status == 404:
        return ProviderModelNotFound(provider, f"not found (HTTP 404): {message}", http_status=status)
    if status == 408:
        return ProviderTimeout(provider, "the provider timed out (HTTP 408)", http_status=status)
    if status >= 500:
        return ProviderUnavailable(
            provider,
            f"provider error (HTTP {status}): {message}",
            retry_after=retry_after_seconds(headers),
            http_status=status,
        )
    return ProviderRejected(provider, f"request refused (HTTP {status}): {message}", http_status=status)


def transport_error(provider: str, exc: httpx.HTTPError) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(provider, f"no answer in time ({type(exc).__name__})")
    return ProviderUnavailable(provider, f"cannot reach the provider ({type(exc).__name__})")


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """Server-sent events from a stream of lines (the WHATWG event-stream rules: ``event:`` and
    multi-line ``data:`` fields, ``:`` comments, a blank line ends an event)."""
    event, data = "", []
    async for line in lines:
        if not line:
            if data:
                yield SseEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield SseEvent(event or "message", "\n".join(data))


def parse_json(provider: str, text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ProviderBadResponse(provider, "the provider's answer is not valid JSON") from None


class HttpProvider(ABC):
    """Base of the HTTP adapters: holds the provider's client and key, sends JSON, reads JSON or SSE."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        options: HttpOptions,
        *,
        http2: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.api_key = api_key
        self.client = make_client(base_url, options, http2=http2, transport=transport)
        self.extra_headers = dict(headers or {})

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The provider's own way of presenting the key (Bearer, x-api-key, x-goog-api-key)."""

    def _headers(self, base: Mapping[str, str]) -> dict[str, str]:
        if not self.api_key:
            raise ProviderNotConfigured(self.name, "not configured: no API key")
        return {**base, **self.extra_headers, **self.auth_headers()}

    async def list_models(self) -> list:
        return []

    async def post_json(self, path: str, body: dict[str, Any], *, params: Mapping[str, str] | None = None) -> Any:
        """POST ``body``; the decoded JSON answer, or a typed error."""
        request = self.client.build_request(
            "POST",
            path,
            content=json.dumps(body).encode(),
            headers=self._headers(JSON_HEADERS),
            params=params,
        )
        try:
            response = await self.client.send(request)
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc) from None
        if response.status_code >= 300:
            raise error_from_response(self.name, response.status_code, response.headers, response.content)
        return parse_json(self.name, response.content)

    @asynccontextmanager
    async def post_sse(
        self, path: str, body: dict[str, Any], *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """POST ``body`` and yield its server-sent events; the connection is released on exit."""
        request = self.client.build_request(
            "POST", path, content=json.dumps(body).encode(), headers=self._headers(SSE_HEADERS), params=params
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc) from None
        try:
            if response.status_code >= 300:
                try:
                    content = await response.aread()
                except httpx.HTTPError as exc:
                    raise transport_error(self.name, exc) from None
                raise error_from_response(self.name, response.status_code, response.headers, content)
            yield self._events(response)
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response) -> AsyncIterator[SseEvent]:
        try:
            async for event in sse_events(response.aiter_lines()):
                yield event
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc) from None

    async def aclose(self) -> None:
        await self.client.aclose()
