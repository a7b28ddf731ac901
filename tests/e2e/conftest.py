"""A real uvicorn server on loopback (real app, Edge store, samples) and headless Chromium."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from app.main import create_app
from app.routes import ui
from app.services import Services
from ingest.job import build_pipeline
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.retrieval import RetrievalService
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.edge import EdgeStore
from tests.fakes import ScriptedGenerator

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# Debian's chromium (`make browser` installs it); a test tool's own browser download
# cannot work on machines without the open internet.
CHROMIUM = os.environ.get("RAG_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 120.0
TIMEOUT_MS = 15_000


class LiveServer:
    """The app in a uvicorn server on its own thread and event loop, like `rag serve`."""

    def __init__(
        self, settings: Settings, embedder: SentenceTransformerEmbedder, gen: ScriptedGenerator
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.generator = gen
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="e2e-uvicorn", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self.error = exc

    async def _serve(self) -> None:
        store = EdgeStore(
            self.settings.qdrant_dir, dim=self.embedder.dim, embedding_model=self.embedder.name
        )
        try:
            await build_pipeline(self.settings, store, self.embedder).run([SAMPLES], "default")
            retrieval = RetrievalService(store, self.embedder, QdrantBm25Encoder())
            services = Services(
                settings=self.settings, embedder=self.embedder, store=store, retrieval=retrieval
            )
            services.set_generator(self.generator)
            app = create_app(self.settings, services=services)
            if not any(getattr(r, "path", None) == "/" for r in app.routes):
                app.include_router(ui.router)  # until app.main includes the page itself
            config = uvicorn.Config(
                app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
            )
            self.server = uvicorn.Server(config)
            await self.server.serve(sockets=[self.sock])
        finally:
            await store.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.server is not None and self.server.started):
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"the e2e server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the e2e server did not start in {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(scope="module")
def scripted() -> ScriptedGenerator:
    return ScriptedGenerator()


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    scripted: ScriptedGenerator,
) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    settings = Settings(_env_file=None, data_dir=data)
    server = LiveServer(settings, embedder, scripted)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def generator(scripted: ScriptedGenerator) -> ScriptedGenerator:
    """The server's generator, reset to a fresh script for each test."""
    fresh = ScriptedGenerator()
    for name in ("tokens", "fail_before_first", "fail_after", "delay_s", "rewrite_to"):
        setattr(scripted, name, getattr(fresh, name))
    scripted.requests.clear()
    scripted.active.clear()
    scripted.aborted.clear()
    return scripted


# Module scope: Playwright's own event loop is gone before later tests run theirs.
@pytest.fixture(scope="module")
def playwright_session() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make browser` (Debian's chromium package)")
    browser = playwright_session.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((live_server.url, "data:")) else outside.append(r.url),
    )
    console_errors: list[str] = []
    # An HTTP error status is logged by the browser itself; the page reports those in its banner.
    page.on(
        "console",
        lambda m: (
            console_errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    yield page
    # The last view of every test, for a person to look at when one fails.
    page.screenshot(path=tmp_path / "page.png")
    context.close()
    assert outside == [], f"the page made requests off this server: {outside}"
    assert console_errors == [], f"the page logged errors: {console_errors}"
