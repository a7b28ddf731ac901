"""Server-Sent Events for the answer routes: one response shape, one relay, one error event.

`/v1/ask/stream` and the OpenAI stream differ only in how they frame the answer (their
`AnswerFrames`); relaying the chunks, reporting a failure after the 200 in-band (vLLM's rule)
and aborting generation when the relay is stopped early are written once, here. The OpenAI
stream is the relay itself, so its client leaving aborts at once; `/v1/ask/stream` runs the
relay in a resumable stream (`app/resume.py`) that outlives one connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from sse_starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

from app.errors import envelope
from app.schemas import ErrorEnvelope
from pipelines.chain import Answer
from pipelines.errors import GenerationFailed, RagError

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A client that reads nothing for this long is stuck: its response ends (sse-starlette's).
SEND_TIMEOUT_S = 30


class AnswerFrames(Protocol):
    """How one route frames an answer as events."""

    def start(self, answer: Answer) -> Iterable[ServerSentEvent]: ...

    def token(self, text: str) -> ServerSentEvent: ...

    def end(self, answer: Answer) -> Iterable[ServerSentEvent]: ...

    def error(self, error: ErrorEnvelope) -> ServerSentEvent: ...


def json_event(data: object, event: str | None = None, id: str | None = None) -> ServerSentEvent:
    return JSONServerSentEvent(data=data, event=event, id=id)


Finish = Callable[[Answer], Awaitable[None]]


async def relay(
    answer: Answer, frames: AnswerFrames, rid: str, finish: Finish | None = None
) -> AsyncIterator[ServerSentEvent]:
    """The answer's events: start, a token per text chunk, then end, or one error event
    instead of the end. Generation is aborted however the stream stops (client gone too).
    The end has the sources' best spans (embedded while the model generated: nothing waits
    for them before the first token) and the answer's citations."""
    generated = False
    try:
        for event in frames.start(answer):
            yield event
        try:
            async for chunk in answer.chunks():
                if chunk.text:
                    yield frames.token(chunk.text)
            generated = True
            await answer.settle()
        except RagError as exc:
            generated = True
            log.warning("request %s: generation failed mid-stream: %s", rid, exc.message)
            yield frames.error(envelope(exc, rid))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            generated = True
            log.exception("request %s: generation failed mid-stream", rid)
            yield frames.error(
                envelope(GenerationFailed(f"generation failed: {type(exc).__name__}"), rid)
            )
            return
        for event in frames.end(answer):
            yield event
    finally:
        if not generated:  # the relay was stopped mid-answer: its client is gone
            log.info("request %s: client disconnected, generation aborted", rid)
        try:
            await answer.aclose()
        finally:
            if finish is not None:  # the tokens generated count, however the stream ended
                await finish(answer)


def event_response(
    events: AsyncIterator[ServerSentEvent],
    *,
    ping_s: float,
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """The SSE response: keep-alive comments every `ping_s` (RAG_SERVER__SSE_PING_S), no proxy
    buffering, a send timeout for stuck clients (sse-starlette's); a disconnect cancels the
    iteration of `events`."""
    return EventSourceResponse(
        events,
        ping=ping_s,
        headers={**SSE_HEADERS, **(headers or {})},
        send_timeout=SEND_TIMEOUT_S,
    )


def stream_response(
    answer: Answer,
    frames: AnswerFrames,
    rid: str,
    *,
    ping_s: float,
    finish: Finish | None = None,
) -> EventSourceResponse:
    """The relay as the response itself: a disconnect cancels it and so aborts generation."""
    return event_response(relay(answer, frames, rid, finish), ping_s=ping_s)
