"""The gateway's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from services.common.process import freeze_startup_heap
from services.common.telemetry import exporting
from services.gateway.api.asgi_routes import AsgiRoutes
from services.gateway.api.routes import (
    admin,
    auth,
    collections,
    completions,
    docqa,
    health,
    jwks,
    openai,
    operator,
    tasks,
)
from services.gateway.config import GatewaySettings
from services.gateway.errors import install_error_handlers
from services.gateway.middleware import EdgeMiddleware, RateLimits, RouteTemplates
from services.gateway.ratelimit import RateLimiter, TrustedProxies, parse_limits
from services.gateway.state import GatewayState

# Scraped and probed every few seconds: a trace of each would drown the real ones.
UNTRACED_PREFIXES = ("/metrics", "/health", "/api/health")


def telemetry_config() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry: one server span per request, outside every middleware (refusals
    included) and named by route template, only when spans are exported (off, it costs nothing).
    Prometheus has the metrics; validation failures are not logged to OpenTelemetry, as they would
    carry the request's values, prompts included."""
    return {
        "tracing": exporting(),
        "operation_spans": False,  # not a span per dependency and serialization step
        "metrics": False,
        "logs": False,
        "exclude": lambda scope: scope.get("path", "").startswith(UNTRACED_PREFIXES),
    }


def create_app(settings: GatewaySettings, *, asgi_routes: bool = True) -> FastAPI:
    """The gateway app for ``settings``: routes, error handlers and the edge middleware; its shared
    state (:class:`GatewayState`) is built when the app starts and closed when it stops.

    ``asgi_routes``: the chat and text completion routes are answered by the pure-ASGI middleware
    (api/asgi_routes.py) ahead of FastAPI's router; False leaves them to their FastAPI routes (the
    tests compare both)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState.build(settings)
        # The one attribute the app's state holds; dependencies read it through deps.gateway_state.
        app.state.gateway = state
        await state.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await state.close()

    # The schema and its pages are served by api/routes/operator.py, behind OperatorDep.
    app = FastAPI(
        title="Goblin",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=telemetry_config(),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Routes are matched in order: the OpenAI API, the hot path, first.
    app.include_router(openai.router)
    app.include_router(completions.router)
    app.include_router(docqa.router)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(jwks.router)
    app.include_router(tasks.router)
    app.include_router(operator.router)
    app.include_router(collections.router)
    app.include_router(admin.router)

    # One middleware for the whole edge (services/gateway/middleware.py): in request order the envelope,
    # security headers, the net for unhandled errors, CORS, the body limit, the timeout, rate limits.
    rate_limits = None
    if settings.rate_limit_enabled:
        burst = parse_limits(settings.rate_limit_burst) if settings.rate_limit_burst.strip() else None
        limiter = RateLimiter(
            settings.redis_url.get_secret_value(),
            settings.rate_limits(),
            burst=burst,
            user=parse_limits(settings.rate_limit_user),
            fail_open=settings.rate_limit_fail_open,
        )
        rate_limits = RateLimits(
            limiter,
            TrustedProxies(settings.trusted_proxy_list),
            verified=lambda credential: app.state.gateway.principals.get(credential),
        )
    cors = None
    if settings.cors_origin_list:
        cors = {
            "allow_origins": settings.cors_origin_list,
            "allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
            "allow_headers": ["Authorization", "Content-Type", "X-Correlation-ID"],
            "expose_headers": ["X-Correlation-ID", "X-Trace-Id", "Retry-After"],
        }
    if asgi_routes:
        # Added before the edge, so inside it: every edge behaviour applies to these routes too.
        app.add_middleware(AsgiRoutes, fastapi_app=app)
    app.add_middleware(
        EdgeMiddleware,
        templates=RouteTemplates(lambda: [*app.openapi()["paths"], "/metrics"]),
        max_bytes=settings.max_body_bytes,
        document_bytes=settings.max_document_body_bytes,
        chat_bytes=settings.max_chat_body_bytes,
        default_timeout_s=settings.request_timeout_s,
        chat_timeout_s=settings.chat_timeout_s,
        rate_limits=rate_limits,
        cors=cors,
    )
    return app
