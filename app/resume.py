"""Resumable answer streams: generation outlives the HTTP response that reads it.

A stream of `POST /v1/ask/stream` is a producer task that relays the answer's frames into an
append-only buffer, and one response at a time that replays the buffer from a sequence number
and then follows it live. Every event's id is `<stream id>.<seq>`: a random 16-hex stream id
and its sequence number from 1.

The contract (also in the route's OpenAPI description):

* A client whose connection breaks sends the same request again (the same route, the same body
  bytes, the same API key) with `Last-Event-ID: <the last id it received>`: it gets the events
  after that one — no gap, no repeat, no second `sources` — as fetch-based SSE clients resume.
* The answer is generated on meanwhile. Nobody back within RAG_SERVER__STREAM_RESUME_S: the
  generation is aborted (logged as a disconnect). A finished answer is kept as long for a late
  reconnect, then dropped. 0 keeps nothing: the client leaving aborts at once.
* A resume needs the owner (key, route, SHA-256 of the body) *and* the stream id to match, so
  no caller can attach to another's stream; anything else is 404 `stream_not_found`, which
  never starts a second answer. A malformed `Last-Event-ID` is 422.
* A reconnect while an older response still reads the stream (a half-open connection) takes
  the stream over: the older response ends.
* `DELETE /v1/ask/stream/{stream id}` (the same key) aborts it at once: a client's Stop, which
  closing the connection no longer is.

The buffers live in this process: behind several replicas a resume must reach the replica
that started the stream (sticky routing, e.g. nginx `hash $http_authorization consistent;`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from app.errors import request_id
from app.sse import event_response
from pipelines.errors import InvalidInput, NotFound
from pipelines.settings import ServerSettings

log = logging.getLogger(__name__)

# Events kept for a replay (one per token: more than any answer's max_tokens in practice); a
# longer stream forgets its oldest, and a resume from before them is refused.
MAX_EVENTS = 65_536
LAST_EVENT_ID = "Last-Event-ID"
STREAM_ID_HEADER = "X-Stream-ID"
_EVENT_ID = re.compile(r"([0-9a-f]{16})\.(0|[1-9][0-9]{0,8})")


class StreamNotFound(NotFound):
    """A resume of a stream this server no longer has (or never had, for this caller)."""

    code = "stream_not_found"


@dataclass(frozen=True, slots=True)
class StreamOwner:
    """Who may resume a stream: the caller's key, the route and the exact request body."""

    caller: str
    path: str
    body_sha256: str

    @classmethod
    async def of(cls, request: Request, caller: str) -> StreamOwner:
        body = await request.body()  # already read (and cached) for the route's model
        return cls(caller, request.url.path, hashlib.sha256(body).hexdigest())


def parse_event_id(value: str) -> tuple[str, int]:
    """(stream id, seq) of a `Last-Event-ID`; 422 naming the header when it is not one of ours."""
    match = _EVENT_ID.fullmatch(value.strip())
    if match is None:
        raise InvalidInput(
            f"header '{LAST_EVENT_ID}': '{value[:80]}' is not an event id of this API "
            "(expected '<16 hex digits>.<sequence number>', the `id:` of the last event "
            "received); send the request without it to ask again"
        )
    return match.group(1), int(match.group(2))


class AnswerStream:
    """One answer's events: appended by the producer task, read by one response at a time.

    One timer at a time: while nobody reads a running stream, the abort; once it is complete
    and unread, its drop from the registry."""

    def __init__(
        self,
        sid: str,
        owner: StreamOwner,
        *,
        resume_s: float,
        rid: str,
        forget: Callable[[AnswerStream], None],
    ) -> None:
        self.sid = sid
        self.owner = owner
        self.rid = rid
        self._resume_s = resume_s
        self._forget = forget
        self._events: deque[ServerSentEvent] = deque(maxlen=MAX_EVENTS)
        self._last = 0  # the seq of the newest event
        self._changed = asyncio.Event()  # replaced at each change: a waiter sees the next one
        self._reader = 0  # the number of the response now reading; 0: none
        self._readers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._producer: asyncio.Task[None] | None = None
        self._aborted = False
        self._closed = False  # the producer has ended: nothing more will come

    @property
    def _first(self) -> int:
        """The seq of the oldest event still held."""
        return self._last - len(self._events) + 1

    # -- the producer ---------------------------------------------------------------------

    def start(self, events: AsyncIterator[ServerSentEvent]) -> None:
        self._producer = asyncio.create_task(self._produce(events), name=f"sse-{self.sid}")
        if self._resume_s:
            # Unread until its response starts: a client gone before that is gone for good.
            self._set_timer(self._resume_s, self._expire)

    async def _produce(self, events: AsyncIterator[ServerSentEvent]) -> None:
        try:
            async for event in events:
                self._last += 1
                event.id = f"{self.sid}.{self._last}"
                self._events.append(event)
                self._wake()
        finally:
            # The relay's own cleanup (abort upstream, token charge) has run: complete.
            self._closed = True
            self._wake()
            if self._aborted:
                self._drop_after(0)
            elif self._reader == 0:
                self._drop_after(self._resume_s)  # finished unread: kept for a reconnect

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _set_timer(self, delay: float, then: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, then)

    def _drop_after(self, delay: float) -> None:
        if delay <= 0:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._forget(self)
        else:
            self._set_timer(delay, lambda: self._forget(self))

    def _expire(self) -> None:
        """Nobody read the running stream in time: abort the generation."""
        self._timer = None
        if self._reader or self._closed or self._producer is None:
            return
        if self._resume_s:
            log.info("request %s: nobody resumed stream %s in time", self.rid, self.sid)
        self._aborted = True
        self._forget(self)  # at once: a reconnect from now on is told the stream is gone
        self._producer.cancel()  # the relay aborts generation and logs the disconnect

    def stop(self) -> None:
        """Its client asks to stop: abort now, whoever reads (the reader then ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._aborted = True
        self._forget(self)
        if self._producer is not None:
            self._producer.cancel()

    async def aclose(self) -> None:
        """Abort the generation (the service stops) and wait for its cleanup."""
        if self._timer is not None:
            self._timer.cancel()
        if self._producer is not None and not self._producer.done():
            self._aborted = True
            self._producer.cancel()
            await asyncio.wait((self._producer,))

    # -- the reading response -------------------------------------------------------------

    def check_resumable(self, after: int) -> None:
        """422 for an event never sent, 404 for one older than the buffer holds."""
        if after > self._last:
            raise InvalidInput(
                f"header '{LAST_EVENT_ID}': stream {self.sid} never sent event {after} "
                f"(it is at event {self._last})"
            )
        if after + 1 < self._first:
            raise StreamNotFound(
                f"stream {self.sid} no longer holds the events after {after} (it keeps the "
                f"last {MAX_EVENTS}); send the request without {LAST_EVENT_ID} to ask again"
            )

    async def follow(self, after: int) -> AsyncIterator[ServerSentEvent]:
        """The events after seq `after`, then the live ones up to the last; ends early when a
        newer response takes the stream over."""
        self._readers += 1
        me = self._reader = self._readers
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()  # an older reader sees that it was taken over, and ends
        sent = after
        try:
            while self._reader == me:
                if sent + 1 < self._first:
                    return  # fell further behind than the buffer holds: a resume says so
                if sent < self._last:
                    sent += 1
                    yield self._events[sent - self._first]
                elif self._closed:
                    return
                else:
                    await self._changed.wait()
        finally:
            self._leave(me)

    def _leave(self, me: int) -> None:
        if self._reader != me:
            return  # taken over: the newer reader owns the stream
        self._reader = 0
        if self._closed:
            self._drop_after(self._resume_s)
        elif self._resume_s == 0:
            self._expire()
        else:
            log.info(
                "request %s: client left stream %s; generating on for %g s for a reconnect",
                self.rid,
                self.sid,
                self._resume_s,
            )
            self._set_timer(self._resume_s, self._expire)


class StreamRegistry:
    """The streams of this process, by stream id."""

    def __init__(self) -> None:
        self._streams: dict[str, AnswerStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def start(
        self,
        owner: StreamOwner,
        events: AsyncIterator[ServerSentEvent],
        *,
        resume_s: float,
        rid: str,
    ) -> AnswerStream:
        """A stream producing `events` from now on, whoever reads it."""
        sid = secrets.token_hex(8)
        while sid in self._streams:
            sid = secrets.token_hex(8)
        stream = AnswerStream(sid, owner, resume_s=resume_s, rid=rid, forget=self._forget)
        self._streams[sid] = stream
        stream.start(events)
        return stream

    def find(
        self, owner: StreamOwner, last_event_id: str, *, resume_s: float
    ) -> tuple[AnswerStream, int]:
        """The stream a `Last-Event-ID` names and the seq to resume after: 404 unless it is
        running (or finished within `resume_s`) and this caller's, for this route and body."""
        sid, after = parse_event_id(last_event_id)
        stream = self._streams.get(sid)
        if stream is None or stream.owner != owner:
            raise StreamNotFound(
                f"stream {sid} is not open: it ended more than {resume_s:g} s ago, or it never "
                "existed for this request and API key; send the request without "
                f"{LAST_EVENT_ID} to ask again"
            )
        stream.check_resumable(after)
        return stream, after

    def stop(self, caller: str, sid: str) -> None:
        """Abort the caller's stream `sid` now (the chat page's Stop); 404 when it has none."""
        stream = self._streams.get(sid)
        if stream is None or stream.owner.caller != caller:
            raise StreamNotFound(f"stream {sid} is not open (it ended, or it is not yours)")
        log.info("request %s: stream %s stopped by its client", stream.rid, sid)
        stream.stop()

    def _forget(self, stream: AnswerStream) -> None:
        if self._streams.get(stream.sid) is stream:
            del self._streams[stream.sid]

    async def aclose(self) -> None:
        """Abort every generation still running (the service stops)."""
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.aclose()


def answer_streams(request: Request) -> StreamRegistry:
    """The app's registry (the lifespan makes it; made here on first use otherwise)."""
    registry = getattr(request.app.state, "answer_streams", None)
    if not isinstance(registry, StreamRegistry):
        registry = request.app.state.answer_streams = StreamRegistry()
    return registry


def _response(stream: AnswerStream, after: int, server: ServerSettings) -> EventSourceResponse:
    return event_response(
        stream.follow(after), ping_s=server.sse_ping_s, headers={STREAM_ID_HEADER: stream.sid}
    )


def resumed(
    request: Request, owner: StreamOwner, server: ServerSettings
) -> EventSourceResponse | None:
    """The rest of the stream the request's `Last-Event-ID` names (404/422 when it cannot be
    resumed); None for a request without one."""
    last_event_id = request.headers.get(LAST_EVENT_ID, "").strip()
    if not last_event_id:
        return None
    stream, after = answer_streams(request).find(
        owner, last_event_id, resume_s=server.stream_resume_s
    )
    log.info("request %s: resumes stream %s after event %d", request_id(request), stream.sid, after)
    return _response(stream, after, server)


def started(
    request: Request,
    owner: StreamOwner,
    events: AsyncIterator[ServerSentEvent],
    server: ServerSettings,
) -> EventSourceResponse:
    """A new resumable stream producing `events`, read by this request's response."""
    stream = answer_streams(request).start(
        owner, events, resume_s=server.stream_resume_s, rid=request_id(request)
    )
    return _response(stream, 0, server)
