"""POST /v1/ask (JSON) and POST /v1/ask/stream (SSE): grounded answers with numbered sources."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.deps import ServicesDep
from app.disconnect import answer_text, unless_disconnected
from app.errors import error_responses, request_id
from app.principal import Caller, CallerDep
from app.schemas import (
    AskRequest,
    AskResponse,
    DoneEvent,
    ErrorEnvelope,
    SourceOut,
    SourcesEvent,
    TokenEvent,
    UsageOut,
    check_message_chars,
)
from app.services import Services
from app.sse import json_event, stream_response
from pipelines.chain import Answer, AskInput
from pipelines.types import ChatMessage

router = APIRouter(tags=["ask"])

_ERRORS = error_responses(400, 403, 404, 422, 429, 503, 504)
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


def to_ask_input(body: AskRequest, services: Services, caller: Caller, rid: str) -> AskInput:
    settings = services.settings
    collection = body.collection or settings.default_collection
    access = caller.read(collection)  # 403 before anything is retrieved
    if body.messages is not None:
        check_message_chars([m.content for m in body.messages], settings.server)
    body.check_question(settings.server.max_question_chars)
    if body.messages is not None:
        messages = [ChatMessage(role=m.role, content=m.content) for m in body.messages]
    else:
        messages = [ChatMessage(role="user", content=body.question or "")]
    return body.ask_input(
        messages,
        collection=collection,
        max_tokens=body.max_tokens,
        model=body.model,
        llm=settings.llm,
        request_id=rid,
        access=access,
    )


@router.post(
    "/ask",
    response_model=AskResponse,
    responses=_ERRORS,
    summary="Answer a question from the knowledge base (JSON)",
)
async def ask(
    body: AskRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> AskResponse:
    ask_input = to_ask_input(body, services, caller, request_id(request))
    chain = services.require_chain()
    await caller.before_generation()
    answer, text = await answer_text(chain, ask_input, request)
    await caller.charge(answer)
    return AskResponse(
        answer=text,
        sources=SourceOut.many(answer),
        finish_reason=answer.finish_reason,
        usage=UsageOut.of(answer.usage),
        latency_ms=answer.latency_ms(),
        query=answer.query,
    )


class AskFrames:
    """`sources`, `token`…, then `done` or `error`; every frame has the next id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def _event(self, name: str, data: object) -> ServerSentEvent:
        return json_event(data, event=name, id=str(next(self._ids)))

    def start(self, answer: Answer) -> Iterable[ServerSentEvent]:
        yield self._event("sources", SourcesEvent(sources=SourceOut.many(answer)).model_dump())

    def token(self, text: str) -> ServerSentEvent:
        return self._event("token", TokenEvent(text=text).model_dump())

    def end(self, answer: Answer) -> Iterable[ServerSentEvent]:
        done = DoneEvent(
            finish_reason=answer.finish_reason,
            usage=UsageOut.of(answer.usage),
            latency_ms=answer.latency_ms(),
        )
        yield self._event("done", done.model_dump())

    def error(self, error: ErrorEnvelope) -> ServerSentEvent:
        return self._event("error", error.body())


@router.post(
    "/ask/stream",
    responses={200: {"content": {"text/event-stream": {}}, "description": _SSE_DOC}, **_ERRORS},
    summary="Answer a question, streamed token by token over Server-Sent Events",
    description=_SSE_DOC,
    response_class=EventSourceResponse,
)
async def ask_stream(
    body: AskRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> EventSourceResponse:
    rid = request_id(request)
    ask_input = to_ask_input(body, services, caller, rid)
    chain = services.require_chain()
    await caller.before_generation()
    answer = await unless_disconnected(request, rid, chain.answer(ask_input))
    return stream_response(answer, AskFrames(), rid, finish=caller.charge)
