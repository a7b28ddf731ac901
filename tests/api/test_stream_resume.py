"""Issue 16, item 3: a `/v1/ask/stream` client whose connection breaks sends the same request
again with `Last-Event-ID` and gets the rest of the same answer — no gap, no repeat, no second
`sources`; nobody back within RAG_SERVER__STREAM_RESUME_S aborts the generation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.services import Services, open_keys
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import ServerSettings, Settings
from pipelines.types import GenerationChunk, GenerationRequest
from tests.support.fakes import ScriptedGenerator
from tests.support.seeds import ingest_samples
from tests.support.servers import live_server
from tests.support.sse import Event, aiter_events, parse_events

# How long a test waits for something that should come at once (only a failing test waits).
WAIT_S = 10.0
BODY = {"question": "How hot is Venus?", "k": 3}
TOKENS = [f"w{i} " for i in range(12)]


@dataclass
class HeldGenerator(ScriptedGenerator):
    """Streams its first `hold_after` tokens, then holds the rest until `release` is set, so
    that a test drops its connection mid-answer for certain. `finished` is set once a stream
    ran to its end."""

    hold_after: int = 3
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        sent = 0
        async for chunk in super().stream(request):
            if sent == self.hold_after:
                await self.release.wait()
            sent += 1
            yield chunk
        self.finished.set()


@asynccontextmanager
async def serving(
    make_settings: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    generator: ScriptedGenerator,
    resume_s: float = 15.0,
    keys: tuple[str, ...] = (),
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """The app served by uvicorn on loopback (a connection can really drop), its client, and
    the auth headers of read keys named `keys` (none: the server is open)."""
    settings = make_settings(server=ServerSettings(stream_resume_s=resume_s))
    async with AsyncExitStack() as stack:
        core = await stack.enter_async_context(open_core(settings, embedder=embedder))
        await ingest_samples(core)
        key_store, quotas = await open_keys(settings, stack)
        headers: dict[str, dict[str, str]] = {}
        for name in keys:
            assert key_store is not None
            _, token = key_store.create(name=name, role="read", collections=["default"])
            headers[name] = {"Authorization": f"Bearer {token}"}
        services = Services(core=core, keys=key_store, quotas=quotas)
        services.set_generator(generator)
        url = await stack.enter_async_context(live_server(create_app(settings, services=services)))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=WAIT_S))
        yield client, headers


async def read_until(
    client: httpx.AsyncClient,
    stop: Callable[[list[Event]], bool],
    headers: dict[str, str] | None = None,
    body: dict[str, Any] = BODY,
) -> list[Event]:
    """Stream the answer and hang up (the connection closes) once `stop(events so far)`."""
    events: list[Event] = []
    async with client.stream("POST", "/v1/ask/stream", json=body, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async with asyncio.timeout(WAIT_S):
            async for event in aiter_events(r.aiter_lines()):
                events.append(event)
                if stop(events):
                    break
    return events


async def resume(
    client: httpx.AsyncClient,
    last: Event,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] = BODY,
) -> httpx.Response:
    assert last.id is not None
    return await client.post(
        "/v1/ask/stream", json=body, headers={**(headers or {}), "Last-Event-ID": last.id}
    )


def comparable(events: list[Event]) -> list[tuple[str, Any]]:
    """The events without what differs between two runs of one answer (latencies)."""
    return [(e.event, {k: v for k, v in e.data.items() if k != "latency_ms"}) for e in events]


def tokens_read(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: sum(e.event == "token" for e in events) >= n


async def test_reconnect_with_last_event_id_gets_exactly_the_rest_of_the_answer(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    gen = HeldGenerator(tokens=TOKENS, hold_after=3)
    async with serving(make_settings, embedder, gen) as (client, _):
        gen.release.set()
        whole = parse_events((await client.post("/v1/ask/stream", json=BODY)).text)
        gen.release.clear()

        first = await read_until(client, tokens_read(3))  # sources + 3 tokens, then hang up
        assert [e.event for e in first] == ["sources", "token", "token", "token"]
        gen.release.set()  # the rest is generated whether or not anyone reads it yet
        r = await resume(client, first[-1])
        assert r.status_code == 200, r.text
        rest = parse_events(r.text)

    assert comparable(first + rest) == comparable(whole)
    assert [e.event for e in rest].count("sources") == 0 and rest[-1].event == "done"
    sid = first[0].id.split(".")[0] if first[0].id else ""
    assert len(sid) == 16
    assert [e.id for e in first + rest] == [f"{sid}.{n}" for n in range(1, len(whole) + 1)]
    assert len(gen.requests) == 2 and gen.aborted == []  # one generation for the two reads


async def test_reconnect_after_the_answer_finished_gets_the_rest(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    gen = HeldGenerator(tokens=TOKENS, hold_after=2)
    async with serving(make_settings, embedder, gen) as (client, _):
        first = await read_until(client, tokens_read(2))
        gen.release.set()
        await asyncio.wait_for(gen.finished.wait(), WAIT_S)  # finished while nobody read
        r = await resume(client, first[-1])
        assert r.status_code == 200, r.text
        rest = parse_events(r.text)
    text = "".join(e.data["text"] for e in first + rest if e.event == "token")
    assert text == "".join(TOKENS)
    assert [e.event for e in rest] == ["token"] * (len(TOKENS) - 2) + ["done"]


async def test_a_newer_connection_takes_the_stream_over(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    """A client whose connection is half-open (the server still writes to it) reconnects: the
    new response gets the rest; the old one ends without a terminal event."""
    gen = HeldGenerator(tokens=TOKENS, hold_after=2)
    async with (
        serving(make_settings, embedder, gen) as (client, _),
        client.stream("POST", "/v1/ask/stream", json=BODY) as old,
    ):
        lines = aiter_events(old.aiter_lines())
        async with asyncio.timeout(WAIT_S):
            seen = [await anext(lines) for _ in range(3)]  # sources + 2 tokens
            assert seen[-1].id is not None
            again = client.build_request(
                "POST", "/v1/ask/stream", json=BODY, headers={"Last-Event-ID": seen[-1].id}
            )
            new = await client.send(again, stream=True)
            assert new.status_code == 200
            rest_of_old = [e async for e in lines]  # ends: taken over
            gen.release.set()
            rest = parse_events((await new.aread()).decode())
            await new.aclose()
    assert rest_of_old == []
    assert [e.event for e in rest] == ["token"] * (len(TOKENS) - 2) + ["done"]


async def test_nobody_back_within_the_window_aborts_generation(
    make_settings: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gen = ScriptedGenerator(forever=True, delay_s=0.01)  # an answer that never ends by itself
    caplog.set_level(logging.INFO, logger="app")
    async with serving(make_settings, embedder, gen, resume_s=0.3) as (client, _):
        first = await read_until(client, tokens_read(2))
        assert await asyncio.to_thread(gen.abandoned.wait, WAIT_S), "generation went on"
        assert gen.active == set()
        late = await resume(client, first[-1])
    assert late.status_code == 404, late.text
    error = late.json()["error"]
    assert error["code"] == "stream_not_found"
    assert "0.3 s" in error["message"] and "without Last-Event-ID" in error["message"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("client disconnected, generation aborted" in m for m in messages), messages


async def test_no_window_aborts_at_once_and_keeps_nothing(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    gen = ScriptedGenerator(forever=True, delay_s=0.01)
    async with serving(make_settings, embedder, gen, resume_s=0) as (client, _):
        first = await read_until(client, tokens_read(1))
        assert await asyncio.to_thread(gen.abandoned.wait, WAIT_S), "generation went on"
        late = await resume(client, first[-1])
    assert late.status_code == 404
    assert late.json()["error"]["code"] == "stream_not_found"


async def test_another_key_or_another_body_cannot_attach(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    gen = HeldGenerator(tokens=TOKENS, hold_after=2)
    async with serving(make_settings, embedder, gen, keys=("ann", "bob")) as (client, keys):
        first = await read_until(client, tokens_read(2), headers=keys["ann"])
        other_key = await resume(client, first[-1], headers=keys["bob"])
        other_body = await resume(client, first[-1], headers=keys["ann"], body={**BODY, "k": 4})
        gen.release.set()
        mine = await resume(client, first[-1], headers=keys["ann"])
    for refused in (other_key, other_body):
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "stream_not_found"
    assert other_key.json()["error"]["message"] == other_body.json()["error"]["message"]
    assert mine.status_code == 200
    assert [e.event for e in parse_events(mine.text)][-1] == "done"
    assert "bob" not in mine.text


@pytest.mark.parametrize(
    ("last_event_id", "status", "code"),
    [
        ("0123456789abcdef.3", 404, "stream_not_found"),
        ("7", 422, "invalid_request"),
        ("not-an-id", 422, "invalid_request"),
    ],
    ids=["unknown", "bare-number", "garbage"],
)
async def test_a_resume_that_cannot_be_served_is_an_error_never_a_fresh_answer(
    make_settings: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    last_event_id: str,
    status: int,
    code: str,
) -> None:
    gen = ScriptedGenerator()
    async with serving(make_settings, embedder, gen) as (client, _):
        r = await client.post("/v1/ask/stream", json=BODY, headers={"Last-Event-ID": last_event_id})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    if status == 422:
        assert "Last-Event-ID" in error["message"]
    assert gen.requests == []


async def test_delete_stops_the_stream_at_once_for_its_own_key_only(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    """Closing the connection no longer aborts a resumable stream (a reconnect may follow):
    the chat page's Stop deletes it, which aborts the generation within the window."""
    gen = ScriptedGenerator(forever=True, delay_s=0.01)
    async with (
        serving(make_settings, embedder, gen, keys=("ann", "bob")) as (client, keys),
        client.stream("POST", "/v1/ask/stream", json=BODY, headers=keys["ann"]) as r,
    ):
        sid = r.headers["x-stream-id"]
        lines = aiter_events(r.aiter_lines())
        async with asyncio.timeout(WAIT_S):
            first = await anext(lines)
            assert first.id is not None and first.id.startswith(f"{sid}.")
            not_bobs = await client.delete(f"/v1/ask/stream/{sid}", headers=keys["bob"])
            assert not_bobs.status_code == 404
            assert not_bobs.json()["error"]["code"] == "stream_not_found"
            stopped = await client.delete(f"/v1/ask/stream/{sid}", headers=keys["ann"])
            assert stopped.status_code == 204
            assert await asyncio.to_thread(gen.abandoned.wait, WAIT_S), "generation went on"
            rest = [e async for e in lines]  # the response ends too
        again = await client.delete(f"/v1/ask/stream/{sid}", headers=keys["ann"])
    assert "done" not in [e.event for e in rest]
    assert again.status_code == 404
