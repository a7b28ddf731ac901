"""The service behind a real nginx (Debian's) with the config we ship, `deploy/nginx.conf`:
tokens reach the client one by one, keep-alive pings pass, a client that leaves at the proxy
aborts generation upstream, and the JSON routes and X-Request-ID pass through.

The generator holds each token until the test releases it, so "one by one" is observed, not
timed: token i is read through nginx before token i+1 exists. A proxy that buffered would
hold it back and the bounded read would fail the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import ServerSettings, Settings
from pipelines.sse_client import SSEDecoder
from pipelines.types import GenerationChunk, GenerationRequest
from tests.support.nginx import NginxProxy, check_config, nginx_missing, nginx_proxy
from tests.support.servers import ThreadedLiveServer
from tests.support.sse import Event

pytestmark = pytest.mark.slow

TOKENS = ["Venus ", "is ", "hot ", "[1]", "."]
QUESTION = {"question": "How hot is the surface of Venus?"}
PING_S = 0.2  # RAG_SERVER__SSE_PING_S: a ping while the generator is held, well inside WAIT_S
WAIT_S = 10.0  # the bound on every wait for something to arrive or happen


@dataclass
class GatedGenerator:
    """A Generator (the port) that yields each of `tokens` only once the test has released it,
    from the test's thread, then ends. `closed` is set when a stream was closed before its
    end (its client gone); threading events, since the server runs on a thread of its own."""

    tokens: list[str] = field(default_factory=lambda: list(TOKENS))
    closed: threading.Event = field(default_factory=threading.Event)
    _released: int = 0  # releases not yet spent on a token
    _wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None  # a waiting stream
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_names(self) -> list[str]:
        return ["gated"]

    @property
    def max_model_len(self) -> int:
        return 2048

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    def release(self) -> None:
        """Let the running (or next) stream yield its next token; called from any thread."""
        with self._lock:
            self._released += 1
            wake = self._wake
        if wake is not None:
            loop, event = wake
            loop.call_soon_threadsafe(event.set)

    def reset(self) -> None:
        """Nothing released or recorded (one server serves every test of the module)."""
        with self._lock:
            self._released = 0
            self._wake = None
        self.closed.clear()

    async def _released_one(self) -> None:
        """Wait on the server's loop for a release and spend it. Checking for one and
        registering to be woken happen under one lock, so no release is missed between."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._released:
                    self._released -= 1
                    self._wake = None
                    return
                event = asyncio.Event()
                self._wake = (loop, event)
            await event.wait()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        finished = False
        try:
            for token in self.tokens:
                await self._released_one()
                yield GenerationChunk(token)
            finished = True
            yield GenerationChunk(
                "", finish_reason="stop", prompt_tokens=42, completion_tokens=len(self.tokens)
            )
        finally:
            if not finished:
                self.closed.set()


class StreamReader:
    """One SSE response read line by line as it arrives: events through the product's own
    decoder, comment lines (keep-alive pings) kept. Every wait is bounded: by httpx's read
    timeout for each line and by WAIT_S in all (pings would otherwise keep a wait alive)."""

    def __init__(self, response: httpx.Response, proxy: NginxProxy) -> None:
        self._lines = response.iter_lines()
        self._decoder = SSEDecoder()
        self._proxy = proxy
        self.comments: list[str] = []

    def next_event(self) -> Event:
        got = self._next(want_comment=False)
        assert isinstance(got, Event)
        return got

    def next_comment(self) -> str:
        """The next comment line; an event arriving first fails the test."""
        got = self._next(want_comment=True)
        assert isinstance(got, str)
        return got

    def _next(self, *, want_comment: bool) -> Event | str:
        deadline = time.monotonic() + WAIT_S
        try:
            for line in self._lines:
                if line.startswith(":"):
                    self.comments.append(line)
                    if want_comment:
                        return line
                sse = self._decoder.decode(line)
                if sse is not None:
                    event = Event(sse.event, json.loads(sse.data), sse.id)
                    assert not want_comment, f"an event came before any comment: {event}"
                    return event
                if time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:
            pass
        else:
            if time.monotonic() <= deadline:
                raise AssertionError(f"the stream ended early\n{self._proxy.log_tail()}")
        what = "comment" if want_comment else "event"
        raise AssertionError(
            f"no {what} arrived through nginx within {WAIT_S} s\n{self._proxy.log_tail()}"
        )


@pytest.fixture(scope="module")
def gated() -> GatedGenerator:
    return GatedGenerator()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    gated: GatedGenerator,
) -> Iterator[ThreadedLiveServer]:
    """The real app over the samples in uvicorn, answering with the gated generator; a client
    that leaves aborts at once (no grace window for a resume)."""
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("nginx") / "data",
        server=ServerSettings(sse_ping_s=PING_S, stream_resume_s=0),
    )
    server = ThreadedLiveServer(settings, embedder, gated)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream: ThreadedLiveServer) -> Iterator[NginxProxy]:
    if (missing := nginx_missing()) is not None:
        pytest.fail(missing)
    with nginx_proxy(upstream.url) as running:
        yield running


@pytest.fixture
def client(proxy: NginxProxy) -> Iterator[httpx.Client]:
    # The read timeout bounds each wait for a line; StreamReader bounds a wait in all.
    with httpx.Client(base_url=proxy.url, timeout=httpx.Timeout(WAIT_S)) as c:
        yield c


@pytest.fixture
def generator(gated: GatedGenerator) -> GatedGenerator:
    gated.reset()
    return gated


def test_shipped_nginx_config_passes_nginx_check() -> None:
    if (missing := nginx_missing()) is not None:
        pytest.fail(missing)
    checked = check_config()
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_json_routes_and_request_id_pass_through_nginx(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert health.headers["x-request-id"]  # nginx's own id when the client sent none

    found = client.post(
        "/v1/search", json={"query": "surface of Venus", "k": 3}, headers={"X-Request-ID": "e2e-1"}
    )
    assert found.status_code == 200, found.text
    assert found.headers["x-request-id"] == "e2e-1"
    assert found.json()["hits"]

    assert client.get("/metrics").status_code == 403  # the shipped config keeps it in


def test_tokens_reach_the_client_through_nginx_one_by_one(
    client: httpx.Client, proxy: NginxProxy, generator: GatedGenerator
) -> None:
    generator.release()  # the first token: the 200 comes once generation has begun
    with client.stream("POST", "/v1/ask/stream", json=QUESTION) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = StreamReader(response, proxy)
        assert reader.next_event().event == "sources"
        for i, token in enumerate(TOKENS):
            if i:
                generator.release()  # only now does token i exist
            event = reader.next_event()
            assert (event.event, event.data) == ("token", {"text": token}), f"token {i}"
        done = reader.next_event()
        assert done.event == "done"
        assert done.data["finish_reason"] == "stop"
    assert not generator.closed.is_set()


def test_keep_alive_pings_pass_through_nginx_while_the_generator_is_silent(
    client: httpx.Client, proxy: NginxProxy, generator: GatedGenerator
) -> None:
    generator.release()
    with client.stream("POST", "/v1/ask/stream", json=QUESTION) as response:
        assert response.status_code == 200, response.read()
        reader = StreamReader(response, proxy)
        assert reader.next_event().event == "sources"
        assert reader.next_event().data == {"text": TOKENS[0]}
        # Nothing is released: only a keep-alive comment can arrive now.
        assert reader.next_comment().startswith(": ping")
        for _ in TOKENS[1:]:
            generator.release()
        texts = [reader.next_event().data.get("text") for _ in TOKENS[1:]]
        assert texts == TOKENS[1:]
        assert reader.next_event().event == "done"


def test_client_leaving_at_nginx_aborts_generation_upstream(
    client: httpx.Client, proxy: NginxProxy, generator: GatedGenerator
) -> None:
    generator.release()
    with client.stream("POST", "/v1/ask/stream", json=QUESTION) as response:
        assert response.status_code == 200, response.read()
        reader = StreamReader(response, proxy)
        assert reader.next_event().event == "sources"
        assert reader.next_event().data == {"text": TOKENS[0]}
    # The response is closed mid-answer: nginx closes its connection to the service, whose
    # stream is cancelled while the generator waits for its second token.
    assert generator.closed.wait(timeout=WAIT_S), (
        f"generation was not aborted upstream within {WAIT_S} s\n{proxy.log_tail()}"
    )
