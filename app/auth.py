"""Authentication on every /v1 endpoint: `Authorization: Bearer <key>` (what OpenAI SDKs send
as their `api_key`), a key from the key database (`rag keys`) or the bootstrap key
RAG_SERVER__API_KEY; then the key's request limit; then one audit line per request.

The check is a pure ASGI middleware, not a route dependency: FastAPI resolves dependencies only
after it has read and parsed the body, so a client without a key could make the server read a
large upload (or answer 422 to malformed JSON) before it heard 401. Here the answer comes from
the headers alone; `receive` is never called before the key has passed. The principal it
finds is left in the request's state for `app/principal.py`'s `CallerDep`.
"""

from __future__ import annotations

import logging

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.errors import envelope, error_headers, request_id
from app.principal import Principal
from pipelines.errors import RagError

PROTECTED_PREFIX = "/v1"
audit = logging.getLogger("ragserve.audit")

# Parses nothing at request time (the middleware does the check): it documents the scheme in
# OpenAPI as the `v1` router's dependency.
bearer = HTTPBearer(
    auto_error=False,
    description="An API key made with `rag keys create` (or POST /v1/keys), or the bootstrap "
    "key RAG_SERVER__API_KEY. A server without any key runs open on loopback.",
)


def _protected(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def bearer_token(request: Request) -> str | None:
    """The bearer token, "" for a malformed Authorization header, None for none at all."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


class ApiKeyAuth(HttpMiddleware):
    """401 (the error envelope, `WWW-Authenticate: Bearer`) to a /v1 request without a valid
    key and 429 over its request limit, both before anything reads its body; then the audit
    line: key id and name, method, path, collection, status."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        if services is None or not _protected(scope):
            await self.inner(scope, receive, send)
            return
        request = Request(scope)
        principal: Principal | None = None
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            try:
                found: Principal = await anyio.to_thread.run_sync(
                    services.gate.principal, services.settings, services.keys, bearer_token(request)
                )
                principal = found
                if services.quotas is not None and found.authenticated:
                    await services.quotas.hit_request(found.key_id, found.requests_per_minute)
            except RagError as refusal:
                await self._refuse(refusal, request, scope, receive, record)
                return
            request.state.principal = principal
            await self.inner(scope, receive, record)
        finally:
            _audit(request, principal, status)

    @staticmethod
    async def _refuse(
        refusal: RagError, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = dict(error_headers(refusal) or {})
        if request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        ):
            # The body stays unread: close rather than let the server swallow it to reuse
            # the connection.
            headers["Connection"] = "close"
        body = envelope(refusal, request_id(request)).body()
        await JSONResponse(body, status_code=refusal.status, headers=headers)(scope, receive, send)


def _audit(request: Request, principal: Principal | None, status: int) -> None:
    state = request.state
    audit.info(
        "request=%s key=%s name=%s %s %s collection=%s status=%d%s",
        request_id(request),
        principal.key_id if principal is not None else "-",
        principal.name if principal is not None else "-",
        request.method,
        request.url.path,
        getattr(state, "audit_collection", "-"),
        status,
        f" tokens={state.audit_tokens}" if hasattr(state, "audit_tokens") else "",
        extra={
            "key_id": principal.key_id if principal is not None else None,
            "status": status,
        },
    )
