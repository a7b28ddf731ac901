"""POST /v1/ask (JSON) and POST /v1/ask/stream (SSE): grounded answers with numbered sources."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.deps import ServicesDep
from app.disconnect import answer_text, unless_disconnected
from app.errors import error_responses, request_id
from app.principal import Caller, CallerDep
from app.resume import StreamOwner, answer_streams, resumed, started
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
from app.schemas.citations import CitationOut, SpanOut
from app.schemas.usage import CostOut
from app.services import Services
from app.sse import json_event, relay
from pipelines.chain import Answer, AskInput
from pipelines.pricing import estimate
from pipelines.settings import LLMSettings
from pipelines.types import ChatMessage

router = APIRouter(tags=["ask"])

_ERRORS = error_responses(400, 403, 404, 422, 429, 502, 503, 504)
_STREAM_ERRORS = error_responses(
    400,
    403,
    404,
    422,
    429,
    503,
    504,
    e404="The collection does not exist, or (`stream_not_found`) the stream a `Last-Event-ID` "
    "names is not open for this request and key: ask again without the header",
    e422="Invalid request: the message names the field, or the `Last-Event-ID` header",
)
_SSE_DOC = """Server-Sent Events, in this order (every frame has an `id:`
`<stream id>.<seq>`: 16 hex digits, then the event's number from 1):

* `sources` — once, first: `{"sources": [{"n", "doc_id", "chunk_id", "title", "source",
  "page", "score", "text", "best_span": null}]}`
* `token` — 0..n: `{"text": "..."}` (a `[n]` naming no source given never shows)
* `done` — terminal: `{"finish_reason": "stop"|"length", "usage": {"prompt_tokens",
  "completion_tokens", "total_tokens"}, "cost": {"usd", "reference_usd", "reference_model"},
  "latency_ms": {"retrieval", "ttft", "total"}, "best_spans": [{"start", "end"} | null],
  "citations": [{"n", "chunk_id", "answer_span", "marker", "source_span", "support",
  "supported"}], "invalid_citations"}` (`cost`: the estimate at RAG_LLM__PRICES, and at the
  reference hosted model's list price; `best_spans`: per source, in order, the sentence or two
  of its `text` closest to the question, computed while the answer streams; `citations`: each
  cited sentence, offsets into the tokens' text, with the span of the source's `text` that
  supports it best and its support, `supported` at or above RAG_CITATIONS__SUPPORT_FLOOR;
  `invalid_citations`: the markers removed)
* `error` — terminal instead of `done`: `{"error": {"code", "message", "request_id",
  "retryable"}}`

Keep-alive comments every `RAG_SERVER__SSE_PING_S` (15 s). Errors before the stream starts are
plain JSON errors with their HTTP status.

**Resuming.** A client whose connection breaks sends the same request again (same body, same
API key) with the header `Last-Event-ID: <the id of the last event it received>`: the answer
goes on from the next event, with no gap, no repeat and no second `sources`; a newer
connection takes the stream over from an older one still open. The generation goes on while
nobody reads for `RAG_SERVER__STREAM_RESUME_S` (15 s; 0: closing the connection aborts it at
once), then is aborted; a finished answer is kept as long. `DELETE /v1/ask/stream/{stream
id}` (the `X-Stream-ID` response header) aborts it at once. A stream that is gone, or not
this request's and key's, is 404 `stream_not_found` (never a second answer: ask again without
the header); a malformed `Last-Event-ID` is 422. The buffers live in the serving process:
behind several replicas, a resume needs sticky routing (e.g. nginx `hash $http_authorization
consistent;`)."""


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
    cost = await caller.charge(answer, ask_input.model)
    report = await answer.settle()
    return AskResponse(
        answer=text,
        sources=SourceOut.many(answer),
        finish_reason=answer.finish_reason,
        usage=UsageOut.of(answer.usage),
        cost=CostOut.of(cost),
        latency_ms=answer.latency_ms(),
        query=answer.query,
        citations=CitationOut.many(answer),
        invalid_citations=report.invalid,
    )


class AskFrames:
    """`sources`, `token`…, then `done` or `error`; the stream gives each its id. `done`
    carries the cost of the answer's usage at `model`'s price (the relay charges the same
    usage once the stream ends)."""

    def __init__(self, llm: LLMSettings, model: str | None) -> None:
        self._llm = llm
        self._model = model

    def _event(self, name: str, data: object) -> ServerSentEvent:
        return json_event(data, event=name)

    def start(self, answer: Answer) -> Iterable[ServerSentEvent]:
        yield self._event("sources", SourcesEvent(sources=SourceOut.many(answer)).model_dump())

    def token(self, text: str) -> ServerSentEvent:
        return self._event("token", TokenEvent(text=text).model_dump())

    def end(self, answer: Answer) -> Iterable[ServerSentEvent]:
        usage = answer.usage
        cost = estimate(self._llm, self._model, usage.prompt_tokens, usage.completion_tokens)
        done = DoneEvent(
            finish_reason=answer.finish_reason,
            usage=UsageOut.of(usage),
            cost=CostOut.of(cost),
            latency_ms=answer.latency_ms(),
            best_spans=[SpanOut.of(answer.best_span(s.n)) for s in answer.sources],
            citations=CitationOut.many(answer),
            invalid_citations=answer.citations.invalid,
        )
        yield self._event("done", done.model_dump())

    def error(self, error: ErrorEnvelope) -> ServerSentEvent:
        return self._event("error", error.body())


@router.post(
    "/ask/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": _SSE_DOC},
        **_STREAM_ERRORS,
    },
    summary="Answer a question, streamed token by token over Server-Sent Events",
    description=_SSE_DOC,
    response_class=EventSourceResponse,
)
async def ask_stream(
    body: AskRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> EventSourceResponse:
    rid = request_id(request)
    ask_input = to_ask_input(body, services, caller, rid)
    server = services.settings.server
    owner = await StreamOwner.of(request, caller.principal.key_id)
    resuming = resumed(request, owner, server)
    if resuming is not None:
        return resuming
    chain = services.require_chain()
    await caller.before_generation()
    answer = await unless_disconnected(request, rid, chain.answer(ask_input))
    frames = AskFrames(services.settings.llm, ask_input.model)
    charge = caller.charger(ask_input.model)
    return started(request, owner, relay(answer, frames, rid, charge), server)


@router.delete(
    "/ask/stream/{stream_id}",
    status_code=204,
    responses=error_responses(
        404, e404="`stream_not_found`: no open stream of this API key has this id"
    ),
    summary="Stop a streamed answer: its generation is aborted now",
    description="The stream id is the `X-Stream-ID` header of `/v1/ask/stream`'s response "
    "(and the part of each event id before the dot). Closing the connection does not stop a "
    "resumable stream at once: this does.",
)
async def stop_stream(stream_id: str, request: Request, caller: CallerDep) -> Response:
    answer_streams(request).stop(caller.principal.key_id, stream_id)
    return Response(status_code=204)
