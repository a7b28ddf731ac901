"""A real uvicorn server on loopback (real app, Edge store, samples) and headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

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
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def scripted() -> ScriptedGenerator:
    return ScriptedGenerator()


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    scripted: ScriptedGenerator,
) -> Iterator[ThreadedLiveServer]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    settings = Settings(_env_file=None, data_dir=data)
    server = ThreadedLiveServer(settings, embedder, scripted)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def generator(scripted: ScriptedGenerator) -> ScriptedGenerator:
    """The server's generator, reset to a fresh script for each test."""
    scripted.reset()
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
def page(browser: Browser, live_server: ThreadedLiveServer, tmp_path: Path) -> Iterator[Page]:
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
