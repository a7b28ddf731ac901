"""Prometheus metrics: request counts and latencies per route, served at GET /metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()  # per app: several apps in one process stay apart
    requests = Counter(
        "ragserve_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "ragserve_request_seconds",
        "Time to response headers",
        ["route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )

    def route_of(scope: Scope) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "other"))
        return "unmatched"

    class Observe(HttpMiddleware):
        """Counts each request by route and status, times it to its response headers."""

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            started = time.perf_counter()
            status = 500
            route = route_of(scope)

            async def observe(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    latency.labels(route).observe(time.perf_counter() - started)
                await send(message)

            try:
                await self.inner(scope, receive, observe)
            finally:
                requests.labels(route, scope["method"], str(status)).inc()

    app.add_middleware(Observe)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
