"""What operators read: the API schema and its pages, and Prometheus metrics.

Open in development, as FastAPI serves them by default; admins only in production
(:data:`services.gateway.deps.OperatorDep`), where the schema maps the attack surface and the metrics
show traffic by route and user-visible error. Prometheus scrapes the separate metrics listener
(``GOBLIN_GATEWAY_METRICS_PORT``, not published) rather than holding an admin credential.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from services.gateway.deps import OperatorDep

router = APIRouter(include_in_schema=False)
OPENAPI_URL = "/openapi.json"


@router.get(OPENAPI_URL)
async def openapi(request: Request, _operator: OperatorDep) -> JSONResponse:
    """The OpenAPI document of this gateway."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger(request: Request, _operator: OperatorDep) -> HTMLResponse:
    """Swagger UI over the OpenAPI document."""
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request, _operator: OperatorDep) -> HTMLResponse:
    """ReDoc over the OpenAPI document."""
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")


@router.get("/metrics")
async def metrics(_operator: OperatorDep) -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
