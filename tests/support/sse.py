"""Server-sent events as the tests read them: each event's name, JSON data and id, parsed by
the product's own SSE reader (pipelines/sse_client.py), not by a second one written here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple

from pipelines.sse_client import ServerSentEvent, aiter_sse, parse_sse


class Event(NamedTuple):
    event: str
    data: Any  # the event's data, parsed as JSON
    id: str | None


def _event(sse: ServerSentEvent) -> Event:
    return Event(sse.event, json.loads(sse.data), sse.id)


def parse_events(body: str) -> list[Event]:
    """The events of a whole `text/event-stream` body, in order (pings are comments: skipped)."""
    return [_event(e) for e in parse_sse(body)]


async def aiter_events(lines: AsyncIterable[str]) -> AsyncIterator[Event]:
    """The events of a stream as they arrive, e.g. `aiter_events(response.aiter_lines())`."""
    async for sse in aiter_sse(lines):
        yield _event(sse)
