"""API-key authentication: `Authorization: Bearer <key>` on every /v1 endpoint when
RAG_SERVER__API_KEY is set (what OpenAI SDKs send as their `api_key`).

The check is a pure ASGI middleware, not a route dependency: FastAPI resolves dependencies only
after it has read and parsed the body, so a client without the key could make the server read a
large upload (or answer 422 to malformed JSON) before it heard 401. Here the answer comes from
the headers alone; `receive` is never called."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.types import Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.errors import envelope, request_id
from pipelines.errors import Unauthorized

PROTECTED_PREFIX = "/v1"

# Parses nothing at request time (the middleware does the check): it documents the scheme in
# OpenAPI as the `v1` router's dependency.
bearer = HTTPBearer(
    auto_error=False,
    description="The server's API key (RAG_SERVER__API_KEY), when one is set.",
)


def _protected(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_api_key(request: Request, expected: str) -> Unauthorized | None:
    """Why this request may not pass, or None when it carries the key."""
    token = _bearer_token(request)
    if token is None:
        return Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>' "
            "(this server sets RAG_SERVER__API_KEY)"
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return Unauthorized("invalid API key")
    return None


class ApiKeyAuth(HttpMiddleware):
    """Answers 401 (the error envelope, `WWW-Authenticate: Bearer`) to a /v1 request without
    the configured key before anything reads its body. The key is the running services' one,
    read per request (tests set it on the settings after the app is built)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        key = services.settings.server.api_key if services is not None else None
        if key is None or not _protected(scope):
            await self.inner(scope, receive, send)
            return
        request = Request(scope)
        refusal = check_api_key(request, key.get_secret_value())
        if refusal is None:
            await self.inner(scope, receive, send)
            return
        headers = dict(refusal.headers or {})
        if request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        ):
            # The body stays unread: close rather than let the server swallow it to reuse
            # the connection.
            headers["Connection"] = "close"
        body = envelope(refusal, request_id(request)).body()
        await JSONResponse(body, status_code=refusal.status, headers=headers)(scope, receive, send)
