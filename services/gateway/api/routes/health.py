"""Liveness, readiness (every backend's gRPC health) and per-service detail."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.gateway.clients import ServiceHealth
from services.gateway.deps import OperatorDep, StateDep
from services.gateway.errors import error_response
from services.gateway.kpi_sources import check_everything, pool_stats

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the gateway process answers")
async def health() -> dict[str, str]:
    return {"status": "ok", "service": "gateway"}


def readiness(results: list[ServiceHealth], requires: frozenset[str]) -> tuple[list[str], list[str]]:
    """(required dependencies down, others down): ready when the first is empty; the second only
    degrades the routes that use them."""
    down = [r.name for r in results if not r.serving]
    return [n for n in down if n in requires], [n for n in down if n not in requires]


@router.get("/health/ready", summary="Readiness: every dependency GOBLIN_READY_REQUIRES names answers (default all)")
async def ready(state: StateDep) -> JSONResponse:
    results = await check_everything(state)
    services = {r.name: r.status for r in results}
    down, degraded = readiness(results, state.settings.readiness_requires())
    if down:
        return error_response(
            503,
            "not_ready",
            f"not serving: {', '.join(down)}",
            extra={"status": "not_ready", "services": services},
        )
    return JSONResponse({"status": "degraded" if degraded else "ready", "services": services})


@router.get("/health/all", summary="Per-service health detail")
@router.get("/api/health", summary="Per-service health detail (alias of /health/all)")
async def health_all(state: StateDep, _operator: OperatorDep) -> JSONResponse:
    """Each dependency's status, address and check latency (every backend service, Postgres, Redis) and
    the gateway's database pool: for operators, so admins only in production (OperatorDep: open in
    development, as every operator page); liveness and readiness above stay open for probes."""
    results = await check_everything(state)
    overall = "ok" if all(r.serving for r in results) else "degraded"
    body = {
        "status": overall,
        "services": {"gateway": {"status": "SERVING"}, **{r.name: r.as_dict() for r in results}},
        "db_pool": pool_stats(state),
    }
    return JSONResponse(body, status_code=200 if overall == "ok" else 503)


@router.get("/health/db-pool", summary="The gateway's database pool: size, in use, idle, waiting")
async def db_pool(state: StateDep, _operator: OperatorDep) -> JSONResponse:
    """The pool alone, as the design notes' ``/health/db-pool``; 503 until Postgres is connected."""
    stats = pool_stats(state)
    return JSONResponse(stats, status_code=200 if stats["status"] == "ok" else 503)
