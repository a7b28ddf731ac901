"""The FastAPI app factory: lifespan builds the services; routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.auth import ApiKeyAuth, bearer
from app.errors import error_responses, install_error_handlers, request_id
from app.metrics import attach_telemetry, detach_telemetry, install_metrics
from app.resume import StreamRegistry
from app.routes import (
    ask,
    collections,
    docs,
    documents,
    health,
    keys,
    openai_compat,
    search,
    ui,
    usage,
)
from app.services import Services, build_services
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class RequestId(HttpMiddleware):
    """Gives each request an id (the client's X-Request-ID or a new one), kept in the request
    state for logs and error envelopes and echoed in the response headers."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(Request(scope))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        await self.inner(scope, receive, send_with_id)


def create_app(
    settings: Settings | None = None, *, services: Services | None = None, metrics: bool = True
) -> FastAPI:
    """The service. `metrics=False`: no /metrics and nothing measured (the baseline of the
    instrumentation's overhead benchmark, `bench/metrics_overhead.py`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if services is not None:
                app.state.services = services
            else:
                app.state.services = await build_services(settings or Settings(), stack)
            if telemetry is not None:
                # The services were built before the app: their parts are measured from now
                # (and no longer once this app is gone: tests serve one Services twice).
                attach_telemetry(app.state.services, telemetry)
                stack.callback(detach_telemetry, app.state.services)
            # Closed first (last in): generations still running are aborted before the
            # services they use go away.
            app.state.answer_streams = StreamRegistry()
            stack.push_async_callback(app.state.answer_streams.aclose)
            yield

    app = FastAPI(
        title="ragserve",
        version="0.1.0",
        description="Self-hosted RAG: retrieval over Qdrant, answers from vLLM streamed over SSE.",
        lifespan=lifespan,
        # Our own /docs and /redoc (app/routes/docs.py): the same pages with assets served
        # from app/static, so they work offline; FastAPI's load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Added first, so innermost: the 401 is counted by the metrics and carries X-Request-ID.
    app.add_middleware(ApiKeyAuth)
    telemetry = install_metrics(app) if metrics else None

    app.add_middleware(RequestId)

    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(docs.router)
    # With keys (the key database or RAG_SERVER__API_KEY), the API wants a bearer key
    # (checked by ApiKeyAuth before the body is read; `bearer` documents the scheme); health,
    # metrics, the chat page and the docs stay open (the page asks for the key on a 401).
    v1 = APIRouter(
        prefix="/v1", dependencies=[Depends(bearer)], responses=error_responses(401, 403, 429)
    )
    for module in (search, ask, collections, documents, openai_compat, keys, usage):
        v1.include_router(module.router)
    app.include_router(v1)
    return app
