"""Authentication on every /v1 endpoint: `Authorization: Bearer <key>` (what OpenAI SDKs send
as their `api_key`), a key from the key database (`rag keys`) or the bootstrap key
RAG_SERVER__API_KEY; then the key's request limit. And one log line per HTTP request, /v1 or
not: the audit line.

The check is a pure ASGI middleware, not a route dependency: FastAPI resolves dependencies only
after it has read and parsed the body, so a client without a key could make the server read a
large upload (or answer 422 to malformed JSON) before it heard 401. Here the answer comes from
the headers alone; `receive` is never called before the key has passed. The principal it
finds is left in the request's state for `app/principal.py`'s `CallerDep`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.errors import envelope, error_headers, request_id
from app.principal import Principal
from pipelines.errors import RagError
from pipelines.pricing import Cost

PROTECTED_PREFIX = "/v1"
# /v1 requests (what a key did: docs/security.md promises this line); every other request
# (the chat page, docs, health, metrics) on `ragserve.access`.
audit = logging.getLogger("ragserve.audit")
access = logging.getLogger("ragserve.access")
# Probes and scrapes come every few seconds: their lines are debug, out of an info log.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})

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
    key and 429 over its request limit, both before anything reads its body; then, for every
    request, the log line: request id, key, method, route, collection, status, latency, and
    an answer's tokens and cost."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        request = Request(scope)
        protected = _protected(scope)
        principal: Principal | None = None
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if services is None or not protected:
                await self.inner(scope, receive, record)
                return
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
            log_request(request, principal, status, time.perf_counter() - started, protected)

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


def route_template(scope: Scope) -> str:
    """The route's template (`/v1/collections/{collection}/documents`), never the raw path:
    low-cardinality, and no client-chosen text. A request refused before routing (401) is
    matched here; `unmatched` when no route has its path."""
    route = scope.get("route")
    if route is None and "app" in scope:
        partial = None
        for candidate in scope["app"].router.routes:
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                route = candidate
                break
            if match == Match.PARTIAL and partial is None:
                partial = candidate  # the path, another method: a 405
        route = route or partial
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def log_request(
    request: Request, principal: Principal | None, status: int, seconds: float, protected: bool
) -> None:
    """One line per request. Text: `request=<id> key=<id> name=<name> <METHOD> <route>
    collection=<c> status=<n> latency_ms=<ms>` (then `tokens=<prompt>+<completion>
    cost_usd=<usd>` for an answer); JSON: the same as fields."""
    logger = audit if protected else access
    route = route_template(request.scope)
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if not logger.isEnabledFor(level):
        return
    state = request.state
    key = principal if principal is not None and principal.authenticated else None
    fields: dict[str, Any] = {
        "request_id": request_id(request),
        "method": request.method,
        "route": route,
        "status": status,
        "latency_ms": round(seconds * 1000, 2),
        "collection": getattr(state, "audit_collection", None),
        "key_id": key.key_id if key is not None else None,
        "key_name": key.name if key is not None else None,
    }
    answer = ""
    usage: tuple[int, int] | None = getattr(state, "audit_usage", None)
    cost: Cost | None = getattr(state, "audit_cost", None)
    if usage is not None and cost is not None:
        fields.update(
            model=cost.model,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            cost_usd=cost.usd,
            reference_cost_usd=cost.reference_usd,
        )
        answer = f" tokens={usage[0]}+{usage[1]} cost_usd={cost.usd:.9f}"
    logger.log(
        level,
        "request=%s key=%s name=%s %s %s collection=%s status=%d latency_ms=%.1f%s",
        fields["request_id"],
        principal.key_id if principal is not None else "-",
        principal.name if principal is not None else "-",
        request.method,
        route,
        fields["collection"] or "-",
        status,
        fields["latency_ms"],
        answer,
        extra=fields,
    )
