"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from app.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process is serving")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the store is reachable; the generator's state is reported",
    responses={503: {"model": Health, "description": "the vector store is unreachable"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    store_ok = await services.store.healthy()
    details = {
        "store": "ok" if store_ok else "unreachable",
        "search": "ready" if store_ok else "unavailable",
        "generator": services.generator_state,
    }
    if services.generator_error:
        details["generator_error"] = services.generator_error
    # Search is the baseline service: ready once the store answers, even while the LLM warms up.
    status = 200 if store_ok else 503
    body = Health(status="ready" if store_ok else "not_ready", details=details)
    return JSONResponse(body.model_dump(), status_code=status)
