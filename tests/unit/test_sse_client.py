"""Server-sent events are parsed as the HTML standard says (the one client-side parser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pipelines.sse_client import ServerSentEvent, aiter_sse, iter_sse, parse_sse


def test_multi_line_data_is_joined_with_newlines_and_comments_are_skipped() -> None:
    body = ": ping\nevent: token\nid: 1\ndata: a\ndata:b\ndata\n\n"
    assert parse_sse(body) == [ServerSentEvent(event="token", data="a\nb\n", id="1")]


def test_blank_line_dispatches_and_event_name_resets_but_id_carries_over() -> None:
    body = "event: x\nid: 7\ndata: 1\n\ndata: 2\n\n\n\nevent: lone\n\n"
    assert parse_sse(body) == [
        ServerSentEvent(event="x", data="1", id="7"),
        ServerSentEvent(event="message", data="2", id="7"),
    ]


def test_crlf_and_cr_line_ends_and_retry() -> None:
    body = "retry: 1500\r\ndata: a\r\n\r\ndata: b\r\rretry: x\ndata: c\n\n"
    events = parse_sse(body)
    assert [e.data for e in events] == ["a", "b", "c"]
    assert [e.retry for e in events] == [1500, 1500, 1500]


def test_unterminated_last_event_is_still_returned() -> None:
    assert list(iter_sse(["data: [DONE]"])) == [ServerSentEvent(data="[DONE]")]


def test_only_one_leading_space_is_dropped_and_unknown_fields_ignored() -> None:
    assert parse_sse("data:  two\nfoo: bar\n\n") == [ServerSentEvent(data=" two")]


def test_async_lines() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ["event: done", 'data: {"a": 1}', "", "data: x"]:
            yield line

    async def collect() -> list[ServerSentEvent]:
        return [e async for e in aiter_sse(lines())]

    assert asyncio.run(collect()) == [
        ServerSentEvent(event="done", data='{"a": 1}'),
        ServerSentEvent(data="x"),
    ]
