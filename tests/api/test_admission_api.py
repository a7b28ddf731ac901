"""Issue 16, item 1: admission control on the real app. With one generation place and one
place in the queue, the third answer is 429 with Retry-After in the error envelope (the openai
SDK sees its RateLimitError); a queued client that hangs up frees its place; search and health
answer while generation is saturated; a generation past RAG_LLM__TIMEOUT_S is 504, or an
`error` event once streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from app.main import create_app
from app.services import Services
from pipelines.admission import Admission
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import LLMSettings, Settings
from pipelines.types import GenerationChunk, GenerationRequest
from tests.support.fakes import ScriptedGenerator
from tests.support.seeds import ingest_samples
from tests.support.servers import in_process_client, live_server
from tests.support.sse import parse_events

# How long a test waits for something that should happen at once (only a failing test waits).
WAIT_S = 10.0
ASK = {"question": "How hot is Venus?"}
CHAT = {"model": "rag:default", "messages": [{"role": "user", "content": "How hot is Venus?"}]}


@dataclass
class HeldGenerator(ScriptedGenerator):
    """Each answer streams its first token, then waits for the test's `release` before the
    rest (forever with `stall`): generations that hold their place as long as the test says."""

    stall: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        rid = request.request_id or str(len(self.requests))
        self.active.add(rid)
        done = False
        try:
            yield GenerationChunk("Venus ")
            await (asyncio.Event() if self.stall else self.release).wait()
            yield GenerationChunk("is hot [1].", finish_reason="stop", prompt_tokens=9)
            done = True
        finally:
            self.active.discard(rid)
            if not done:
                self.aborted.append(rid)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(llm=LLMSettings(max_concurrent=1, max_queue=1))


@pytest.fixture
def held(services: Services) -> HeldGenerator:
    gen = HeldGenerator()
    services.set_generator(gen)
    return gen


def gate(services: Services) -> Admission:
    assert services.admission is not None
    return services.admission


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the server work until `condition` holds (bounded: a failing test says what)."""
    try:
        async with asyncio.timeout(WAIT_S):
            # The gate's counters are what the test observes; it has no events to wait on.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def spawn(coro: Coroutine[Any, Any, httpx.Response]) -> asyncio.Task[httpx.Response]:
    return asyncio.ensure_future(coro)


async def saturate(
    client: httpx.AsyncClient, services: Services, path: str = "/v1/ask", body: Any = ASK
) -> list[asyncio.Task[httpx.Response]]:
    """One answer generating (holding the only place) and one waiting in the only queue place."""
    admission = gate(services)
    running = spawn(client.post(path, json=body))
    await until(lambda: admission.running == 1, "the first answer to be admitted")
    waiting = spawn(client.post(path, json=body))
    await until(lambda: admission.queued == 1, "the second answer to queue")
    return [running, waiting]


def assert_overloaded(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    wait_s = int(r.headers["retry-after"])
    assert 1 <= wait_s <= 60
    assert int(r.headers["retry-after-ms"]) == wait_s * 1000
    error = r.json()["error"]
    assert error["code"] == "overloaded" and error["retryable"] is True
    assert error["type"] == "requests"  # what OpenAI sends for a request rate limit
    assert error["request_id"] == r.headers["x-request-id"]
    assert "RAG_LLM__MAX_CONCURRENT" in error["message"]


async def test_the_answer_over_cap_and_queue_is_429_and_the_others_finish(
    client: httpx.AsyncClient, services: Services, held: HeldGenerator
) -> None:
    admitted = await saturate(client, services)
    try:
        for path, body in [
            ("/v1/ask", ASK),
            ("/v1/ask/stream", ASK),
            ("/v1/chat/completions", CHAT),
        ]:
            assert_overloaded(await client.post(path, json=body))
        # Refused before retrieval: only the running answer reached the generator.
        assert len(held.requests) == 1
        # Search and health do not wait behind generation.
        search = await client.post("/v1/search", json={"query": "How hot is Venus?", "k": 2})
        assert search.status_code == 200 and search.json()["hits"]
        assert (await client.get("/healthz")).status_code == 200
    finally:
        held.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*admitted), WAIT_S)
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["answer"] == "Venus is hot [1]." for a in answers)
    admission = gate(services)
    assert (admission.running, admission.queued) == (0, 0)


async def test_openai_sdk_sees_a_rate_limit_error_with_retry_after(
    settings: Settings, services: Services, held: HeldGenerator
) -> None:
    async with (
        live_server(create_app(settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http,
    ):
        admitted = await saturate(http, services, "/v1/chat/completions", CHAT)
        sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        try:
            with pytest.raises(openai.RateLimitError) as refused:
                await sdk.chat.completions.create(
                    model="rag:default", messages=[{"role": "user", "content": "How hot?"}]
                )
            error = refused.value
            assert error.status_code == 429 and error.code == "overloaded"
            assert error.type == "requests"
            assert int(error.response.headers["retry-after"]) >= 1
            assert int(error.response.headers["retry-after-ms"]) >= 1000
        finally:
            held.release.set()
            answers = await asyncio.wait_for(asyncio.gather(*admitted), WAIT_S)
            await sdk.close()
    assert [a.status_code for a in answers] == [200, 200]


async def _queue_and_hang_up(url: str, services: Services) -> None:
    """Send an answer request over a plain TCP connection, wait until it is queued, hang up."""
    where = urlsplit(url)
    _, writer = await asyncio.open_connection(where.hostname, where.port)
    payload = json.dumps(ASK).encode()
    head = (
        f"POST /v1/ask HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    await writer.drain()
    try:
        await until(lambda: gate(services).queued == 1, "the request to queue")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_queued_client_that_hangs_up_frees_its_place(
    settings: Settings, services: Services, held: HeldGenerator
) -> None:
    admission = gate(services)
    async with (
        live_server(create_app(settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http,
    ):
        running = spawn(http.post("/v1/ask", json=ASK))
        try:
            await until(lambda: admission.running == 1, "the first answer to be admitted")
            await _queue_and_hang_up(url, services)
            await until(lambda: admission.queued == 0, "the hung-up request to leave the queue")
            # Its place is free: the next request queues instead of being refused.
            late = spawn(http.post("/v1/ask", json=ASK))
            await until(lambda: admission.queued == 1, "a new request to queue")
        finally:
            held.release.set()
        answers = await asyncio.wait_for(asyncio.gather(running, late), WAIT_S)
    assert [a.status_code for a in answers] == [200, 200]
    assert len(held.requests) == 2  # the one that left never reached the generator
    assert (admission.running, admission.queued) == (0, 0)


async def test_a_follow_up_rewrite_and_its_answer_share_one_place_in_turn(
    client: httpx.AsyncClient, services: Services
) -> None:
    gen = ScriptedGenerator(rewrite_to="How hot is Venus?")
    services.set_generator(gen)
    messages = [
        {"role": "user", "content": "Tell me about Venus."},
        {"role": "assistant", "content": "It is the second planet."},
        {"role": "user", "content": "And how hot is it?"},
    ]
    r = await asyncio.wait_for(client.post("/v1/ask", json={"messages": messages}), WAIT_S)
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "How hot is Venus?"
    assert len(gen.requests) == 2  # the rewrite, then the answer: one place, one after another
    assert gate(services).running == 0


async def test_a_generation_past_its_deadline_is_504_or_an_error_event(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    settings = make_settings(llm=LLMSettings(timeout_s=0.5))
    async with open_core(settings, embedder=embedder) as core:
        await ingest_samples(core)
        services = Services(core=core)
        gen = HeldGenerator(stall=True)  # the first token, then nothing
        services.set_generator(gen)
        async with in_process_client(create_app(settings, services=services)) as c:
            r = await asyncio.wait_for(c.post("/v1/ask", json=ASK), WAIT_S)
            assert r.status_code == 504, r.text
            error = r.json()["error"]
            assert error["code"] == "upstream_timeout" and error["retryable"] is True
            assert "RAG_LLM__TIMEOUT_S=0.5" in error["message"]
            streamed = await asyncio.wait_for(c.post("/v1/ask/stream", json=ASK), WAIT_S)
            assert streamed.status_code == 200
            events = parse_events(streamed.text)
            assert [e.event for e in events] == ["sources", "token", "error"]
            assert events[-1].data["error"]["code"] == "upstream_timeout"
        assert len(gen.aborted) == 2 and gen.active == set()  # both engine requests ended
        admission = gate(services)
        assert (admission.running, admission.queued) == (0, 0)
