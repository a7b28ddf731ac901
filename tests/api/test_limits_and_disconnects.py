"""Issue 14, findings 3 and 5: text fields are capped and counted off the event loop; a client
that hangs up aborts its generation on every route that generates, JSON answers included (a
resumable stream once its resume window has passed: issue 16)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import ServerSettings, Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client, live_server

# How long a test waits for an event that should come at once (only a failing test waits).
WAIT_S = 10.0
QUESTION = {"role": "user", "content": "How hot is Venus?"}


@dataclass
class GatedTokenCounter(ScriptedGenerator):
    """Counting the tokens of a long text blocks until the test lets it go: if counting ran on
    the event loop, nothing else (not /healthz) could answer meanwhile, so the wait times out
    and `blocked_the_loop` says so instead of the test hanging."""

    long_text: int = 10_000
    counting: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    blocked_the_loop: bool = False

    @property
    def max_model_len(self) -> int:
        return 32_768  # the long history fits the context: the request is allowed

    def count_tokens(self, text: str) -> int:
        if len(text) >= self.long_text and not self.counting.is_set():
            self.counting.set()
            self.blocked_the_loop = not self.release.wait(WAIT_S)
        return super().count_tokens(text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ask", {}),
        ("/v1/chat/completions", {"model": "rag:default"}),
    ],
)
async def test_long_history_is_counted_off_the_event_loop(
    client: httpx.AsyncClient, services: Services, path: str, body: dict[str, Any]
) -> None:
    gen = GatedTokenCounter()
    services.set_generator(gen)
    history = [
        {"role": "user", "content": "Tell me about the planets. " * 550},  # 14,850 characters
        {"role": "assistant", "content": "Which one?"},
        QUESTION,
    ]
    asking = asyncio.create_task(client.post(path, json={**body, "messages": history}))
    try:
        assert await asyncio.to_thread(gen.counting.wait, WAIT_S), "the long text was not counted"
        health = await client.get("/healthz")  # answers only while the loop is free
    finally:
        gen.release.set()
        answer = await asking
    assert health.status_code == 200
    assert not gen.blocked_the_loop, "token counting blocked the event loop"
    assert answer.status_code == 200, answer.text


def _rejected_field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    return str(error["param"])


LONG = "x" * 16_001  # one over RAG_SERVER__MAX_MESSAGE_CHARS' default
LONG_HISTORY = [{"role": "user", "content": "y" * 15_000}, {"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": LONG}, {"role": "assistant", "content": "ok"}, QUESTION],
            "messages.0.content",
        ),
        (
            [{"role": "assistant", "content": [{"type": "text", "text": LONG}]}, QUESTION],
            "messages.0.content",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "z" * 9_000}] * 2}, QUESTION],
            "messages.0.content",
        ),
        ([{"role": "system", "content": LONG}, QUESTION], "messages.0.content"),
        (LONG_HISTORY * 5 + [QUESTION], "messages"),  # 75,002 characters in all
    ],
    ids=["history", "content-part", "parts-together", "system", "total"],
)
async def test_chat_message_over_the_cap_is_422_naming_the_field(
    client: httpx.AsyncClient, services: Services, messages: list[Any], param: str
) -> None:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    r = await client.post(
        "/v1/chat/completions", json={"model": "rag:default", "messages": messages}
    )
    assert _rejected_field(r) == param
    assert gen.requests == []


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": LONG}, {"role": "assistant", "content": "ok"}, QUESTION],
            "messages.0.content",
        ),
        (LONG_HISTORY * 5 + [QUESTION], "messages"),
    ],
    ids=["history", "total"],
)
async def test_ask_message_over_the_cap_is_422_naming_the_field(
    client: httpx.AsyncClient, services: Services, messages: list[Any], param: str
) -> None:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    r = await client.post("/v1/ask", json={"messages": messages})
    assert _rejected_field(r) == param
    assert gen.requests == []


async def test_message_caps_follow_the_settings(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    settings = make_settings(server=ServerSettings(max_message_chars=100, max_total_chars=150))
    async with open_core(settings, embedder=embedder) as core:
        services = Services(core=core)
        services.set_generator(ScriptedGenerator())
        async with in_process_client(create_app(settings, services=services)) as c:
            one = [{"role": "user", "content": "a" * 101}, QUESTION]
            r = await c.post("/v1/ask", json={"messages": one})
            assert _rejected_field(r) == "messages.0.content"
            assert "RAG_SERVER__MAX_MESSAGE_CHARS" in r.json()["error"]["message"]
            two = [
                {"role": "user", "content": "a" * 80},
                {"role": "assistant", "content": "b" * 80},
            ]
            r = await c.post(
                "/v1/chat/completions", json={"model": "ragserve", "messages": [*two, QUESTION]}
            )
            assert _rejected_field(r) == "messages"
            assert "RAG_SERVER__MAX_TOTAL_CHARS" in r.json()["error"]["message"]


# -- finding 5: a client that hangs up aborts its generation, JSON answers too ------------


async def _post_and_hang_up(
    url: str, path: str, body: dict[str, Any], gen: ScriptedGenerator, *, streamed: bool
) -> None:
    """Send the request over a plain TCP connection, wait until generation runs (and for a
    stream, until its first event arrived), then close the connection."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    await writer.drain()
    try:
        assert await asyncio.to_thread(gen.generating.wait, WAIT_S), "generation never started"
        received = b""
        while streamed and b"data:" not in received:
            chunk = await asyncio.wait_for(reader.read(4096), WAIT_S)
            assert chunk, f"the server closed the stream first: {received!r}"
            received += chunk
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("path", "body", "resume_s"),
    [
        ("/v1/ask", {"question": "How hot is Venus?"}, 15.0),
        ("/v1/chat/completions", {"model": "rag:default", "messages": [QUESTION]}, 15.0),
        ("/v1/ask/stream", {"question": "How hot is Venus?"}, 0.0),
        ("/v1/ask/stream", {"question": "How hot is Venus?"}, 0.2),
        (
            "/v1/chat/completions",
            {"model": "rag:default", "messages": [QUESTION], "stream": True},
            15.0,
        ),
    ],
    ids=["ask", "chat", "ask-stream", "ask-stream-after-the-resume-window", "chat-stream"],
)
async def test_client_gone_aborts_generation_and_says_so(
    settings: Settings,
    services: Services,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
    resume_s: float,
) -> None:
    """Only `/v1/ask/stream` waits for a reconnect (RAG_SERVER__STREAM_RESUME_S, kept short
    here): the JSON answers and the OpenAI stream, which no client resumes, abort at once."""
    services.settings.server.stream_resume_s = resume_s
    gen = ScriptedGenerator(forever=True, delay_s=0.01)  # an answer that never ends by itself
    services.set_generator(gen)
    caplog.set_level(logging.INFO, logger="app")
    async with live_server(create_app(settings, services=services)) as url:
        streamed = path.endswith("/stream") or body.get("stream") is True
        await _post_and_hang_up(url, path, body, gen, streamed=streamed)
        assert await asyncio.to_thread(gen.abandoned.wait, WAIT_S), "generation went on"
        assert gen.active == set()
    assert any(
        "client disconnected, generation aborted" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
