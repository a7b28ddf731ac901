"""The FastAPI app factory: lifespan builds the services; routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request, Response

from app.errors import install_error_handlers, request_id
from app.metrics import install_metrics
from app.routes import ask, collections, health, openai_compat, search, ui
from app.services import Services, build_services
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if services is not None:
                app.state.services = services
            else:
                app.state.services = await build_services(settings or Settings(), stack)
            yield

    app = FastAPI(
        title="ragserve",
        version="0.1.0",
        description="Self-hosted RAG: retrieval over Qdrant, answers from vLLM streamed over SSE.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_metrics(app)

    @app.middleware("http")
    async def add_request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request_id(request)
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(ask.router)
    app.include_router(collections.router)
    app.include_router(openai_compat.router)
    app.include_router(ui.router)
    return app
