"""Reading Server-Sent Events: text lines in, events out, as the HTML standard parses them."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from dataclasses import dataclass

# An SSE line ends at CRLF, LF or CR, and at nothing else (unlike str.splitlines).
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. `id` is the stream's last event id (it carries over to later
    events until an `id:` field changes it), as a browser's `lastEventId`; None before any."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it lines one at a time (a trailing line end is ignored); a blank line dispatches.

    Per the standard: `data:` lines join with "\\n", a line starting with ":" is a comment,
    one space after the colon is dropped, unknown fields are ignored, and a blank line with
    no data dispatches nothing. `flush()` at the end of the stream returns an event whose
    blank line never came (the standard drops it; servers that close right after their last
    `data:` line lose nothing this way).
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def flush(self) -> ServerSentEvent | None:
        return self._dispatch()

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event=event, data="\n".join(data), id=self._id, retry=self._retry)


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of a stream of lines, e.g. `aiter_sse(response.aiter_lines())` (httpx)."""
    decoder = SSEDecoder()
    async for line in lines:
        if (event := decoder.decode(line)) is not None:
            yield event
    if (event := decoder.flush()) is not None:
        yield event


def iter_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """The events of lines already read, e.g. `iter_sse(response.iter_lines())`."""
    decoder = SSEDecoder()
    for line in lines:
        if (event := decoder.decode(line)) is not None:
            yield event
    if (event := decoder.flush()) is not None:
        yield event


def parse_sse(body: str) -> list[ServerSentEvent]:
    """Every event of a whole `text/event-stream` body."""
    return list(iter_sse(_LINE_END.split(body)))
