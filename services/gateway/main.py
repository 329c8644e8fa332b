"""The gateway's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from services.gateway.api.routes import auth, health, openai
from services.gateway.clients import Backends
from services.gateway.config import GatewaySettings
from services.gateway.errors import install_error_handlers
from services.gateway.middleware import RequestEnvelopeMiddleware


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends(settings.peer_addresses())
        try:
            yield
        finally:
            await app.state.backends.close()

    app = FastAPI(title="Goblin", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(openai.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Correlation-ID"],
            expose_headers=["X-Correlation-ID", "Retry-After"],
        )
    # Outermost: the envelope sees every response, including CORS preflights and errors.
    app.add_middleware(RequestEnvelopeMiddleware)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/health")
    return app
