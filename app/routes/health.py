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


_READYZ_DOC = """Readiness, from a health check of the store and a health probe of the
generator (bounded to 2 s) on every call.

* `status: "ready"` (200): the store answers, and the generator is `ready`, `starting` (the
  language model is loading; answers are 503 until then) or `disabled` (none configured).
* `status: "degraded"` (200): the store answers, so search works, but the generator is
  `unreachable` (its probe failed or timed out) or `failed` (it did not start); answers fail
  with 503 and `details.generator_error` says why. Search is the baseline service, so a
  degraded replica stays in rotation.
* `status: "not_ready"` (503): the store is unreachable.

`details.limits` appears when the Redis that replicas share per-key limits through is
unreachable: each replica then enforces the limits on its own counters (status unchanged)."""


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the store is reachable; the generator's health is probed",
    description=_READYZ_DOC,
    responses={503: {"model": Health, "description": "the vector store is unreachable"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    store_ok = await services.store.healthy()
    generator, reason = await services.generator_health()
    details = {
        "store": "ok" if store_ok else "unreachable",
        "search": "ready" if store_ok else "unavailable",
        "generator": generator,
    }
    if reason:
        details["generator_error"] = reason
    if services.quotas is not None and not await services.quotas.healthy():
        # Shared limits' Redis is away: each replica counts on its own until it is back.
        details["limits"] = "local (Redis unreachable)"
    # Search is the baseline service: ready once the store answers, even while the LLM warms up.
    if not store_ok:
        status = "not_ready"
    elif generator in ("unreachable", "failed"):
        status = "degraded"
    else:
        status = "ready"
    body = Health(status=status, details=details)
    return JSONResponse(body.model_dump(), status_code=200 if store_ok else 503)
