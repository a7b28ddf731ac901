"""How routes reach the services built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool (a thread round trip
    # per request, ~0.2 ms).
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
