"""POST /v1/ask (JSON) and POST /v1/ask/stream (SSE): grounded answers with numbered sources."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.deps import ServicesDep
from app.errors import envelope, request_id
from app.schemas import AskRequest, AskResponse, to_domain_filters
from app.services import Services
from pipelines.answer import StartedAnswer, collect, start_answer
from pipelines.chain import AskInput
from pipelines.errors import GenerationFailed, RagError
from pipelines.types import ChatMessage

log = logging.getLogger(__name__)
router = APIRouter(tags=["ask"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "The collection (or model) does not exist"},
    422: {"description": "Invalid request: the message names the field"},
    503: {"description": "The generator is starting or down (retryable; see Retry-After)"},
    504: {"description": "The generator timed out"},
}
_SSE_DOC = """Server-Sent Events, in this order (every frame has an `id:`):

* `sources` — once, first: `{"sources": [{"n", "doc_id", "chunk_id", "title", "source",
  "page", "score", "text"}]}`
* `token` — 0..n: `{"text": "..."}`
* `done` — terminal: `{"finish_reason": "stop"|"length", "usage": {"prompt_tokens",
  "completion_tokens", "total_tokens"}, "latency_ms": {"retrieval", "ttft", "total"}}`
* `error` — terminal instead of `done`: `{"error": {"code", "message", "request_id",
  "retryable"}}`

Keep-alive comments every 15 s. Errors before the stream starts are plain JSON errors with
their HTTP status. Closing the connection aborts the generation upstream."""


def to_ask_input(body: AskRequest, services: Services, rid: str) -> AskInput:
    settings = services.settings
    if body.messages is not None:
        messages = [ChatMessage(role=m.role, content=m.content) for m in body.messages]
    else:
        messages = [ChatMessage(role="user", content=body.question or "")]
    return AskInput(
        messages=messages,
        collection=body.collection or settings.default_collection,
        k=body.k,
        filters=to_domain_filters(body.filters),
        mode=body.mode,
        max_tokens=body.max_tokens or settings.llm.max_tokens,
        temperature=settings.llm.temperature if body.temperature is None else body.temperature,
        model=body.model,
        request_id=rid,
    )


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    responses=_ERRORS,
    summary="Answer a question from the knowledge base (JSON)",
)
async def ask(body: AskRequest, request: Request, services: ServicesDep) -> AskResponse:
    chain = services.require_chain()
    answer = await start_answer(chain, to_ask_input(body, services, request_id(request)))
    text = await collect(answer)
    return AskResponse.model_validate(
        {
            "answer": text,
            "sources": answer.sources(),
            "finish_reason": answer.finish_reason,
            "usage": answer.usage.to_dict(),
            "latency_ms": answer.latency_ms(),
            "query": answer.prepared.query,
        }
    )


async def sse_events(answer: StartedAnswer, rid: str) -> AsyncIterator[ServerSentEvent]:
    ids = itertools.count(1)

    def event(name: str, data: dict[str, Any]) -> ServerSentEvent:
        return ServerSentEvent(
            data=json.dumps(data, ensure_ascii=False), event=name, id=str(next(ids))
        )

    try:
        yield event("sources", {"sources": answer.sources()})
        try:
            async for chunk in answer.chunks():
                if chunk.text:
                    yield event("token", {"text": chunk.text})
        except RagError as exc:
            yield event("error", envelope(exc.code, exc.message, rid, exc.retryable))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # after the 200, failures go in-band
            log.exception("request %s: generation failed mid-stream", rid)
            err = GenerationFailed(f"generation failed: {type(exc).__name__}")
            yield event("error", envelope(err.code, err.message, rid, err.retryable))
            return
        yield event(
            "done",
            {
                "finish_reason": answer.finish_reason,
                "usage": answer.usage.to_dict(),
                "latency_ms": answer.latency_ms(),
            },
        )
    finally:
        await answer.aclose()


@router.post(
    "/v1/ask/stream",
    responses={200: {"content": {"text/event-stream": {}}, "description": _SSE_DOC}, **_ERRORS},
    summary="Answer a question, streamed token by token over Server-Sent Events",
    description=_SSE_DOC,
    response_class=EventSourceResponse,
)
async def ask_stream(
    body: AskRequest, request: Request, services: ServicesDep
) -> EventSourceResponse:
    chain = services.require_chain()
    rid = request_id(request)
    answer = await start_answer(chain, to_ask_input(body, services, rid))
    return EventSourceResponse(
        sse_events(answer, rid), ping=15, headers=SSE_HEADERS, send_timeout=30
    )
