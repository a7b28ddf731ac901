"""One error envelope for every failure; one handler per kind; never a stack trace to clients."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import RagError

log = logging.getLogger(__name__)


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def envelope(
    code: str, message: str, rid: str, retryable: bool = False, **extra: Any
) -> dict[str, Any]:
    # A superset of OpenAI's error object (message, type, param, code): SDKs read it as-is.
    kind = "server_error" if retryable or code == "internal_error" else "invalid_request_error"
    return {
        "error": {
            "code": code,
            "message": message,
            "type": kind,
            "param": None,
            "request_id": rid,
            "retryable": retryable,
            **extra,
        }
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
        return JSONResponse(
            envelope(exc.code, exc.message, rid, exc.retryable),
            status_code=exc.status,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")} for e in errors]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
        return JSONResponse(
            envelope(
                "invalid_request",
                message,
                request_id(request),
                details=details,
                param=details[0]["field"] if details else None,
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }.get(exc.status_code, "http_error")
        return JSONResponse(
            envelope(code, str(exc.detail), request_id(request)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception("request %s: unexpected error", rid)
        return JSONResponse(
            envelope(
                "internal_error", f"internal error; see the server log for request {rid}", rid
            ),
            status_code=500,
        )
