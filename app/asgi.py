"""A base for pure ASGI middlewares: no BaseHTTPMiddleware task and body stream per request
(that costs every request, and every chunk of an SSE stream, a hop through a memory stream)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """Passes non-HTTP scopes (lifespan, websockets) through; subclasses handle HTTP ones."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
