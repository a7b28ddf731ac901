"""Issue 16, item 3: the chat page's stream is cut mid-answer (a loopback TCP proxy in front of
the real server resets the connection); the page reconnects with `Last-Event-ID` by itself and
shows the whole answer exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.test_chat_page import ask
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

WORDS = [f"word{i} " for i in range(40)]


@pytest.fixture
def proxy(live_server: ThreadedLiveServer) -> Iterator[TcpProxy]:
    through = TcpProxy(live_server.url)
    yield through
    through.close()


@pytest.fixture
def proxied_page(browser: Browser, proxy: TcpProxy, tmp_path: Path) -> Iterator[Page]:
    """The chat page loaded through the proxy: all its requests go through it."""
    context = browser.new_context(base_url=proxy.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    stream_requests: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: stream_requests.append(r.headers) if r.url.endswith("/v1/ask/stream") else None,
    )
    page.stream_requests = stream_requests  # type: ignore[attr-defined]
    yield page
    page.screenshot(path=tmp_path / "page.png")
    context.close()
    assert errors == [], f"the page raised: {errors}"


def test_page_resumes_a_cut_stream_and_shows_the_answer_once(
    proxied_page: Page, proxy: TcpProxy, generator: ScriptedGenerator
) -> None:
    page = proxied_page
    generator.tokens, generator.delay_s = WORDS, 0.05
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")

    turn = ask(page, "How hot is Venus?")
    answer = turn.locator(".answer")
    expect(answer).to_contain_text("word3")  # mid-answer: a few tokens arrived
    assert proxy.cut() >= 1, "no connection was open to cut"

    expect(turn).to_have_attribute("data-state", "done", timeout=20_000)
    assert answer.inner_text().split() == [w.strip() for w in WORDS]  # all, each once
    expect(turn.locator("li.source")).not_to_have_count(0)
    expect(page.get_by_role("alert")).to_be_hidden()

    sent = page.stream_requests  # type: ignore[attr-defined]
    assert len(sent) >= 2, "the page did not reconnect"
    assert "last-event-id" not in sent[0]
    assert all(h.get("last-event-id", "").count(".") == 1 for h in sent[1:])
    assert len(generator.requests) == 1 and generator.aborted == []  # one generation
