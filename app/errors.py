"""One error envelope for every failure; one handler per kind; never a stack trace to clients."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorDetail, ErrorEnvelope
from pipelines.errors import RagError

log = logging.getLogger(__name__)


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def envelope(exc: RagError, rid: str) -> ErrorEnvelope:
    return ErrorEnvelope.of(exc.code, exc.message, rid, exc.retryable)


# What each error status means on our routes; OpenAPI documents the one envelope for each.
_MEANING = {
    400: "Bad request: the message says what was wrong",
    401: "Missing or invalid API key",
    404: "The collection, document or model does not exist",
    413: "The upload is larger than RAG_SERVER__MAX_UPLOAD_MB",
    415: "A file type is not supported (nothing was ingested)",
    422: "Invalid request: the message names the field",
    503: "A dependency (store or generator) is down or starting (retryable; see Retry-After)",
    504: "The generator timed out",
}


def error_responses(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each the ErrorEnvelope; `meanings`
    (`e404="..."`) says what a status means on this route when it differs from the usual."""
    return {
        status: {
            "model": ErrorEnvelope,
            "description": meanings.get(f"e{status}", _MEANING.get(status, "Error")),
        }
        for status in statuses
    }


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    # The first element says where (body/query/path/header); the rest names the field.
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        rid = request_id(request)
        if exc.status >= 500:
            log.warning("request %s failed: %s: %s", rid, exc.code, exc.message)
        headers = exc.headers or ({"Retry-After": "5"} if exc.status in (429, 503) else None)
        return JSONResponse(envelope(exc, rid).body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            ErrorDetail(field=_field(e.get("loc", ())), message=e.get("msg", ""))
            for e in exc.errors()
        ]
        message = "; ".join(f"{d.field}: {d.message}" for d in details) or "invalid request"
        body = ErrorEnvelope.of(
            "invalid_request",
            message,
            request_id(request),
            details=details,
            param=details[0].field if details else None,
        )
        return JSONResponse(body.body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }.get(exc.status_code, "http_error")
        return JSONResponse(
            ErrorEnvelope.of(code, str(exc.detail), request_id(request)).body(),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception("request %s: unexpected error", rid)
        message = f"internal error; see the server log for request {rid}"
        return JSONResponse(
            ErrorEnvelope.of("internal_error", message, rid).body(), status_code=500
        )
