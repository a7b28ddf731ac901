"""One error envelope for every failure; one handler per kind; never a stack trace to clients."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.schemas import ErrorDetail, ErrorEnvelope
from pipelines.errors import RagError, RateLimited

log = logging.getLogger(__name__)


# A client's X-Request-ID is kept only when it is short and plain: it goes into every
# response header, error body and log line, so an 8 kB or control-character id is not echoed.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(request: Request) -> str:
    """The request's id: the client's X-Request-ID when it is safe, else a new one."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        given = request.headers.get("x-request-id", "")
        rid = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def envelope(exc: RagError, rid: str) -> ErrorEnvelope:
    return ErrorEnvelope.of(
        exc.code, exc.message, rid, exc.retryable, kind=_openai_type(exc), param=exc.param
    )


def _openai_type(exc: RagError) -> str | None:
    """A 429's `type` as OpenAI sends it for rate limits, `requests` or `tokens`: SDKs and
    gateways tell a request limit (retry soon) from a token budget by it."""
    return exc.limit if isinstance(exc, RateLimited) else None


def error_headers(exc: RagError) -> dict[str, str] | None:
    """The headers an error answers with: its own, a default Retry-After for 429/503, and
    `retry-after-ms` beside Retry-After (the openai SDKs read it first; it is their wait
    between retries)."""
    headers = dict(exc.response_headers() or {})
    if "Retry-After" not in headers and exc.status in (429, 503):
        headers["Retry-After"] = "5"
    wait_s = headers.get("Retry-After", "")
    if wait_s.isdigit():
        headers["retry-after-ms"] = str(int(wait_s) * 1000)
    return headers or None


# What each error status means on our routes; OpenAPI documents the one envelope for each.
_MEANING = {
    400: "Bad request: the body could not be read (not JSON, not UTF-8, a broken multipart "
    "form), or the message says what was wrong (`param` names the field)",
    401: "Missing, malformed, unknown, revoked or expired API key (the message says which)",
    403: "The API key is valid but may not do this: its role or its collections",
    404: "The collection, document or model does not exist",
    413: "The upload is larger than RAG_SERVER__MAX_UPLOAD_MB",
    415: "A file type is not supported (nothing was ingested)",
    422: "Invalid request: `param` names the first field at fault (dotted, e.g. "
    "`messages.0.content`), `details` every one",
    429: "Over the API key's requests per minute or tokens per day, or every generation place "
    "(RAG_LLM__MAX_CONCURRENT) and the queue (RAG_LLM__MAX_QUEUE) are full (see Retry-After)",
    500: "An unexpected error (a bug): the message gives the request id to look for in the "
    "server log",
    502: "The generator failed while answering (retryable)",
    503: "A dependency (store or generator) is down or starting, or the request waited for a "
    "generation place past RAG_LLM__QUEUE_TIMEOUT_S (retryable; see Retry-After)",
    504: "The generator timed out, or a generation took longer than RAG_LLM__TIMEOUT_S",
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


_PLACES = ("body", "query", "path", "header", "cookie")
_ABSENT = object()


def _field(loc: tuple[Any, ...] | list[Any], body: Any = _ABSENT, kind: str = "") -> str:
    """The dotted path of the field at fault, as the client wrote it: without FastAPI's
    `body.` and without pydantic's names of union members (`content.str`,
    `stop.list[constrained-str].1`), which are no field of the request. Those are found by
    walking the request's body: a step the body does not have is a member's name, unless it
    is the missing field."""
    parts = list(loc)
    if len(parts) > 1 and parts[-1] == "[key]":  # a bad dict key: the key names the field
        parts = parts[:-1]
    if not parts or parts[0] not in _PLACES:
        return ".".join(str(p) for p in parts) or "body"
    place, steps = parts[0], parts[1:]
    if place != "body" or body is _ABSENT:
        return ".".join(str(p) for p in steps) or place
    path: list[str] = []
    value = body
    for i, step in enumerate(steps):
        if (isinstance(value, dict) and step in value) or (
            isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value)
        ):
            value = value[step]
        elif not (kind == "missing" and i == len(steps) - 1):
            continue  # a union member's name: the same value, validated as that member
        path.append(str(step))
    return ".".join(path) or "body"


def _details(exc: RequestValidationError) -> list[ErrorDetail]:
    """One detail per field at fault, in pydantic's order. A union's members each report the
    value: their messages go together, and a field whose value a member read deeper (a list
    of parts, one of them wrong) is named by that deeper path only."""
    body = exc.body if exc.body is not None else _ABSENT
    messages: dict[str, list[str]] = {}
    for e in exc.errors():
        said = messages.setdefault(_field(e.get("loc", ()), body, e.get("type", "")), [])
        if e.get("msg", "") not in said:
            said.append(str(e.get("msg", "")))
    fields = [f for f in messages if not any(g.startswith(f + ".") for g in messages if g != f)]
    return [ErrorDetail(field=f, message=", or ".join(messages[f])) for f in fields]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        rid = request_id(request)
        if exc.status >= 500:
            log.warning("request %s failed: %s: %s", rid, exc.code, exc.message)
        return JSONResponse(
            envelope(exc, rid).body(), status_code=exc.status, headers=error_headers(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _invalid_json(request, exc)
        details = _details(exc)
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
        if exc.status_code == 400 and exc.__cause__ is not None:
            return _unreadable_body(request, exc.__cause__)
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

    app.add_middleware(UnexpectedErrors)
    _document_errors(app)


def _invalid_json(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 (the body could not be read, as OpenAI answers it) saying why and where:
    FastAPI's `("body", <char offset>)` as the line and column a person finds in the body."""
    error = next(e for e in exc.errors() if e.get("type") == "json_invalid")
    loc = error.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
    doc = exc.body if isinstance(exc.body, str) else ""
    line, column = doc.count("\n", 0, pos) + 1, pos - doc.rfind("\n", 0, pos)
    reason = str(error.get("ctx", {}).get("error", "")) or "invalid JSON"
    return _bad_body(
        request, f"the request body is not valid JSON: {reason} at line {line} column {column}"
    )


def _unreadable_body(request: Request, cause: BaseException) -> JSONResponse:
    """FastAPI's "There was an error parsing the body", said with its cause."""
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start : cause.start + 1].hex()
        why = f"it is not UTF-8 text (byte 0x{byte} at position {cause.start})"
        return _bad_body(request, f"the request body is not valid JSON: {why}")
    what = "a form" if "form" in request.headers.get("content-type", "") else "JSON"
    return _bad_body(request, f"the request body could not be read as {what}: {cause}")


def _bad_body(request: Request, message: str) -> JSONResponse:
    body = ErrorEnvelope.of("invalid_request", message, request_id(request), param="body")
    return JSONResponse(body.body(), status_code=400)


def _document_errors(app: FastAPI) -> None:
    """OpenAPI says what the handlers above send: the ErrorEnvelope for FastAPI's automatic
    422 (documented as its own `HTTPValidationError`, which no response has), a 400 on every
    route that reads a body (one that cannot be read), a 500 on every route (a bug)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _errors_as_sent(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors_as_sent(schema: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorEnvelope" not in components:  # no route documents an error yet
        own = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(own.pop("$defs", {}), ErrorEnvelope=own)

    def envelope_response(status: int) -> dict[str, Any]:
        return {"description": _MEANING[status], "content": {"application/json": {"schema": ref}}}

    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses["422"] = envelope_response(422)
            if "requestBody" in operation:
                responses.setdefault("400", envelope_response(400))
            responses.setdefault("500", envelope_response(500))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


class UnexpectedErrors(HttpMiddleware):
    """A bug answers 500 in the envelope, its traceback logged once, and the response ends
    cleanly. (A Starlette handler for `Exception` runs in ServerErrorMiddleware, which re-raises
    after answering: the server logged the traceback again and dropped the keep-alive
    connection without `Connection: close`, so the client's next request was reset.)"""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.inner(scope, receive, watch)
        except Exception:
            if started:  # too late for a 500: the server logs it and ends the connection
                raise
            rid = request_id(Request(scope))
            log.exception("request %s: unexpected error", rid)
            message = f"internal error; see the server log for request {rid}"
            body = ErrorEnvelope.of("internal_error", message, rid).body()
            await JSONResponse(body, status_code=500)(scope, receive, send)
