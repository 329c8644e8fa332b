"""What every HTTP provider adapter shares: one connection pool per provider, JSON and SSE over it,
and HTTP failures turned into typed :mod:`~services.router.providers.errors`.

Requests and responses are httpx's, sent through an httpx transport (its public
``handle_async_request`` API) without the ``AsyncClient`` layer: the router needs none of its cookies,
redirects, auth flows or URL merging, and they cost about a third of a request's CPU.

Which transport: HTTP/2 where the provider offers it, that is over TLS with ALPN (``https://`` and the
provider's ``http2`` flag, on by default), through httpx's own transport and ``h2``; otherwise
HTTP/1.1 keep-alive through aiohttp's C-accelerated client (the ``httpx-aiohttp`` transport), which
costs about half of httpx's own HTTP/1.1 stack per request (bench/RESULTS.md, Router). Over that
transport (no proxy), a JSON call and an SSE stream skip httpx's Request, Response and byte-stream
iterators and go straight through the transport's aiohttp session, with the same headers, timeouts and
errors (bench/RESULTS.md, "Router CPU profile"); either way a stream's events are read by one decoder
(services.router.providers.sse).
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import json
import logging
import math
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from services.common.telemetry import SpanKind, annotate_http, http_attributes, span
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
from services.router.providers.sse import SseDecoder, SseEvent
from services.router.providers.sse import sse_events as sse_events  # where it lived before sse.py

# httpx logs every request at INFO: a formatted log line per provider call is cost and noise on the hot
# path; the router's own metrics and ledger say what happened.
logging.getLogger("httpx").setLevel(logging.WARNING)
MAX_ERROR_MESSAGE = 300
# Who is calling, for the provider's logs and support: httpx's AsyncClient would have said python-httpx.
USER_AGENT = {"user-agent": f"goblin-router/{importlib.metadata.version('goblin')}"}
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json", **USER_AGENT}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream", **USER_AGENT}
KEEPALIVE_S = 60.0
MAX_CACHED_URLS = 256


@dataclass(frozen=True)
class HttpOptions:
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    max_connections: int = 100


def uses_http2(base_url: str, http2: bool = True) -> bool:
    """HTTP/2 is negotiated by ALPN during the TLS handshake: only for ``https://`` providers."""
    return http2 and base_url.startswith("https://")


def egress_proxy(base_url: str) -> httpx.Proxy | None:
    """The proxy the environment names for ``base_url`` (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
    minus ``NO_PROXY``), as httpx's ``AsyncClient`` would honour it: transports do not read the
    environment themselves."""
    url = httpx.URL(base_url)
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    return httpx.Proxy(proxy) if proxy else None


def make_transport(base_url: str, options: HttpOptions, *, http2: bool = True) -> httpx.AsyncBaseTransport:
    """The one connection pool of a provider, kept for the life of the process."""
    limits = httpx.Limits(
        max_connections=options.max_connections,
        max_keepalive_connections=options.max_connections,
        keepalive_expiry=KEEPALIVE_S,
    )
    proxy = egress_proxy(base_url)
    if uses_http2(base_url, http2):
        return httpx.AsyncHTTPTransport(http2=True, limits=limits, proxy=proxy)
    return AiohttpTransport(limits=limits, proxy=proxy)


# The longest a provider's Retry-After may make us wait before trying it again.
MAX_RETRY_AFTER_S = 3600.0


def _finite_seconds(text: str, *, scale: float = 1) -> float | None:
    """``text`` as a number of seconds in [0, MAX_RETRY_AFTER_S]; None if it is not a number or NaN."""
    try:
        value = float(text) / scale
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, value))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or OpenAI's ``retry-after-ms``, in seconds.

    A provider's number is input like any other: ``nan`` counts as absent, and anything beyond
    :data:`MAX_RETRY_AFTER_S` (``inf``, ``1e308``) as that ceiling, so no wait is unbounded."""
    millis = headers.get("retry-after-ms")
    if millis:
        seconds = _finite_seconds(millis, scale=1000)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _finite_seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, when.timestamp() - (time.time() if now is None else now)))


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


# What the transports raise when the network fails: httpx's errors (the aiohttp transport maps aiohttp's
# onto them, keeping the original as __cause__), and aiohttp's own for the few it does not map.
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError)


# No connection was made, so no model was asked: the provider-wide circuit's business. aiohttp's
# ClientConnectorError covers refused, unreachable, DNS and TLS (its SSL and certificate errors);
# ConnectionTimeoutError is its connect timeout; httpx's own (the HTTP/2 transport) says ConnectError,
# ConnectTimeout or ProxyError.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ProxyError,
)


def transport_error(provider: str, exc: BaseException) -> ProviderError:
    # The aiohttp transport maps every lost connection to httpx.ConnectTimeout; the cause says what it was.
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    name = type(cause).__name__
    wide = isinstance(cause, CONNECT_ERRORS)
    timed_out = isinstance(cause, asyncio.TimeoutError) or (cause is exc and isinstance(exc, httpx.TimeoutException))
    if timed_out:
        return ProviderTimeout(provider, f"no answer in time ({name})", provider_wide=wide)
    return ProviderUnavailable(provider, f"cannot reach the provider ({name})", provider_wide=wide)


def parse_json(provider: str, text: str | bytes) -> Any:
    """A provider's JSON answer. orjson reads it in a fraction of json's time; what only json reads
    (NaN, Infinity) still reads, through json. (orjson reads an integer past 64 bits as a float: no
    field of an answer we read holds one.)"""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        raise ProviderBadResponse(provider, "the provider's answer is not valid JSON") from None


def json_body(body: dict[str, Any]) -> bytes:
    """A request body as JSON bytes: orjson (UTF-8, a fraction of json's time), json for what orjson
    does not write (integers past 64 bits, non-string keys). A NaN or infinity becomes null, where json
    would write ``NaN``, which is not JSON and which no provider reads."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


class HttpProvider(ABC):
    """Base of the HTTP adapters: holds the provider's connection pool and key, sends JSON, reads JSON
    or SSE."""

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
        """``transport`` replaces the network (tests)."""
        self.name = name
        self.base_url = base_url
        self.api_key = api_key
        self.transport = transport or make_transport(base_url, options, http2=http2)
        self.extra_headers = dict(headers or {})
        self._root = base_url.rstrip("/")
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._timeouts = httpx.Timeout(
            options.timeout_s, connect=options.connect_timeout_s, pool=options.timeout_s
        ).as_dict()
        # The aiohttp transport's own mapping of those timeouts, made once (see _post_direct).
        self._client_timeout = aiohttp.ClientTimeout(
            sock_connect=self._timeouts["connect"], sock_read=self._timeouts["read"], connect=self._timeouts["pool"]
        )
        self._header_cache: dict[tuple[int, str | None], dict[str, str]] = {}
        self._direct_urls: dict[httpx.URL, str] = {}

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The provider's own way of presenting the key (Bearer, x-api-key, x-goog-api-key)."""

    def _headers(self, base: Mapping[str, str]) -> dict[str, str]:
        """The request headers over ``base`` (one of this module's constants), merged once per key: the
        same few dicts every request. Callers must not change what they get."""
        if not self.api_key:
            raise ProviderNotConfigured(self.name, "not configured: no API key")
        cache_key = (id(base), self.api_key)
        headers = self._header_cache.get(cache_key)
        if headers is None:
            headers = {**base, **self.extra_headers, **self.auth_headers()}
            if len(self._header_cache) >= 8:  # a key that changes often: keep the cache small
                self._header_cache.clear()
            self._header_cache[cache_key] = headers
        return headers

    async def list_models(self) -> list:
        return []

    async def _send(
        self, path: str, body: dict[str, Any], headers: Mapping[str, str], params: Mapping[str, str] | None
    ) -> httpx.Response:
        """POST ``body`` as JSON; the response with its body still unread (the caller closes it)."""
        request = httpx.Request(
            "POST",
            self._url(path, params),
            headers=self._headers(headers),
            content=json_body(body),
            extensions={"timeout": self._timeouts},
        )
        try:
            with span("POST", http_attributes(self.name, request.url), kind=SpanKind.CLIENT) as s:
                response = await self.transport.handle_async_request(request)
                annotate_http(s, response.status_code)
                return response
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from None

    def _url(self, path: str, params: Mapping[str, str] | None) -> httpx.URL:
        """URLs are parsed once: a provider calls a handful of them (httpx.URL is immutable)."""
        key = (path, tuple(sorted(params.items())) if params else ())
        url = self._urls.get(key)
        if url is None:
            url = httpx.URL(self._root + path, params=params)
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[key] = url
        return url

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from None
        finally:
            await response.aclose()

    def _direct_session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session under an HTTP/1.1 provider's transport, for a request and answer read whole
        without httpx's Request and Response around them (about 0.1 ms of CPU a call: bench/RESULTS.md,
        "Router CPU profile"); None for HTTP/2, a proxy, or a transport a test put in, which keep httpx."""
        transport = self.transport
        if type(transport) is not AiohttpTransport or transport.proxy is not None:
            return None
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()  # what the transport does on its first request
        return transport.client

    def _target(self, path: str, params: Mapping[str, str] | None) -> tuple[httpx.URL, str]:
        """The request's URL, parsed once (for the span) and as the string aiohttp takes."""
        url = self._url(path, params)
        target = self._direct_urls.get(url)
        if target is None:
            target = str(url)
            if len(self._direct_urls) < MAX_CACHED_URLS:
                self._direct_urls[url] = target
        return url, target

    async def _post_direct(
        self, session: aiohttp.ClientSession, path: str, body: dict[str, Any], params: Mapping[str, str] | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST ``body`` through ``session`` as the aiohttp transport would send it (same headers, timeouts,
        no redirects); status, headers and the whole body."""
        url, target = self._target(path, params)
        headers = self._headers(JSON_HEADERS)
        try:
            with span("POST", http_attributes(self.name, url), kind=SpanKind.CLIENT) as s:
                async with session.request(
                    "POST",
                    target,
                    headers=headers,
                    data=json_body(body),
                    allow_redirects=False,
                    compress=False,
                    timeout=self._client_timeout,
                ) as response:
                    annotate_http(s, response.status)
                    return response.status, response.headers, await response.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from None

    async def post_json(self, path: str, body: dict[str, Any], *, params: Mapping[str, str] | None = None) -> Any:
        """POST ``body``; the decoded JSON answer, or a typed error."""
        session = self._direct_session()
        if session is not None:
            status, headers, content = await self._post_direct(session, path, body, params)
        else:
            response = await self._send(path, body, JSON_HEADERS, params)
            content = await self._read(response)
            status, headers = response.status_code, response.headers
        if status >= 300:
            raise error_from_response(self.name, status, headers, content)
        return parse_json(self.name, content)

    @asynccontextmanager
    async def post_sse(
        self, path: str, body: dict[str, Any], *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """POST ``body`` and yield its server-sent events; the connection is released on exit (closed, when
        the stream was left before its end: the provider stops generating)."""
        session = self._direct_session()
        if session is not None:
            async with self._post_sse_direct(session, path, body, params) as events:
                yield events
            return
        response = await self._send(path, body, SSE_HEADERS, params)
        if response.status_code >= 300:
            content = await self._read(response)
            raise error_from_response(self.name, response.status_code, response.headers, content)
        try:
            yield self._events(response.aiter_bytes())
        finally:
            await response.aclose()

    @asynccontextmanager
    async def _post_sse_direct(
        self, session: aiohttp.ClientSession, path: str, body: dict[str, Any], params: Mapping[str, str] | None
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """:meth:`post_sse` straight through the transport's aiohttp session, as :meth:`_post_direct` is for
        JSON (same headers, timeouts, errors; no httpx Request, Response or byte-stream iterators)."""
        url, target = self._target(path, params)
        headers = self._headers(SSE_HEADERS)
        try:
            with span("POST", http_attributes(self.name, url), kind=SpanKind.CLIENT) as s:
                response = await session.request(
                    "POST",
                    target,
                    headers=headers,
                    data=json_body(body),
                    allow_redirects=False,
                    compress=False,
                    timeout=self._client_timeout,
                )
                annotate_http(s, response.status)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from None
        try:
            if response.status >= 300:
                try:
                    content = await response.read()
                except TRANSPORT_ERRORS as exc:
                    raise transport_error(self.name, exc) from None
                raise error_from_response(self.name, response.status, response.headers, content)
            yield self._events(response.content.iter_any())
        finally:
            # As the transport's stream closes: an answer not read to its end closes the connection
            # (aiohttp keeps only a connection whose payload was read whole).
            response.release()
            await response.wait_for_close()

    async def _events(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
        decoder = SseDecoder()
        try:
            async for chunk in chunks:
                for event in decoder.feed(chunk):
                    yield event
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from None
        for event in decoder.close():
            yield event

    async def aclose(self) -> None:
        await self.transport.aclose()
