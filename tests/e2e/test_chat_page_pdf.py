"""Issue 19, part 3: a cited PDF opens at its page. The drawer of a PDF source offers "Open the
PDF at p. N": the page fetches the original from the real server
(GET /v1/collections/{c}/documents/{doc_id}/file, a real upload's) and opens it from a blob:
URL at `#page=N`. A document whose original the server does not have says so in the drawer.
The stream is played by Playwright in place of /v1/ask/stream (tests/e2e/
test_chat_page_evidence.py); everything else is the real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Response, expect

from pipelines.identity import document_id
from tests.e2e.test_chat_page_evidence import done, open_answer
from tests.support.documents import write_pdf
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

PAGE_TWO = "The pump's seals are replaced every two years."


def pdf_stream(doc_id: str, page: int | None) -> list[tuple[str, dict[str, Any]]]:
    source = {
        "n": 1,
        "doc_id": doc_id,
        "chunk_id": f"{doc_id}:1",
        "title": "Pump manual",
        "source": "pump-manual.pdf",
        "page": page,
        "score": 0.8,
        "text": PAGE_TWO,
        "best_span": {"start": 0, "end": len(PAGE_TWO)},
    }
    events: list[tuple[str, dict[str, Any]]] = [("sources", {"sources": [source]})]
    events += [("token", {"text": "Every two years [1]."}), ("done", done())]
    return events


@pytest.fixture(scope="module")
def uploaded(live_server: ThreadedLiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real PDF uploaded into `default`: its doc_id."""
    pdf = write_pdf(
        tmp_path_factory.mktemp("pdf") / "pump-manual.pdf",
        ["Pump manual. Prime the pump before its first start.", PAGE_TWO],
    )
    r = httpx.post(
        f"{live_server.url}/v1/collections/default/documents",
        files=[("files", (pdf.name, pdf.read_bytes(), "application/pdf"))],
        timeout=60,
    )
    assert r.status_code == 201, r.text
    doc_id = r.json()["files"][0]["doc_id"]
    assert doc_id == document_id("default", "pump-manual.pdf")
    return str(doc_id)


def test_open_the_pdf_at_its_page_opens_the_fetched_file_at_that_page(
    page: Page, live_server: ThreadedLiveServer, uploaded: str, tmp_path: Path
) -> None:
    turn = open_answer(page, pdf_stream(uploaded, page=2))
    turn.locator("button.cite").first.click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_be_visible()
    button = drawer.get_by_role("button", name="Open the PDF at p. 2")
    expect(button).to_be_visible()
    file_url = f"/v1/collections/default/documents/{uploaded}/file"

    def is_file(r: Response) -> bool:
        return r.url.endswith(file_url)

    with (
        page.expect_response(is_file) as fetched,
        page.context.expect_page() as opened,
    ):
        button.click()
    assert fetched.value.status == 200
    assert fetched.value.headers["content-type"] == "application/pdf"
    pdf = opened.value
    assert pdf.url.startswith(f"blob:{live_server.url}/"), pdf.url
    assert pdf.url.endswith("#page=2"), pdf.url
    expect(drawer.locator("#viewer-file-status")).to_have_text("")
    page.screenshot(path=tmp_path / "drawer.png")


def test_a_blocked_tab_leaves_a_link_that_opens_the_pdf_at_its_page(
    page: Page, live_server: ThreadedLiveServer, uploaded: str
) -> None:
    """A browser blocks a tab opened long after the click (window.open gives null): the
    drawer then offers a link, and following it opens the same PDF at the page."""
    page.add_init_script("window.open = () => null")  # what a popup blocker answers
    turn = open_answer(page, pdf_stream(uploaded, page=2))
    turn.locator("button.cite").first.click()
    drawer = page.get_by_role("dialog")
    drawer.get_by_role("button", name="Open the PDF at p. 2").click()
    link = drawer.locator("#viewer-file-status").get_by_role("link", name="open the PDF")
    expect(link).to_be_visible()
    expect(drawer.locator("#viewer-file-status")).to_contain_text("blocked the new tab")
    with page.context.expect_page() as opened:
        link.click()
    pdf = opened.value
    assert pdf.url.startswith(f"blob:{live_server.url}/"), pdf.url
    assert pdf.url.endswith("#page=2"), pdf.url


def test_a_source_that_is_not_a_pdf_offers_no_pdf(page: Page, uploaded: str) -> None:
    events = pdf_stream(uploaded, page=None)
    events[0][1]["sources"][0]["source"] = "pump-notes.md"
    turn = open_answer(page, events)
    turn.locator("button.cite").first.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#viewer-open-pdf")).to_be_hidden()


def test_a_pdf_the_server_does_not_have_says_why_in_the_drawer(
    page: Page, live_server: ThreadedLiveServer
) -> None:
    missing = "0" * 32
    turn = open_answer(page, pdf_stream(missing, page=None))
    turn.locator("button.cite").first.click()
    drawer = page.get_by_role("dialog")
    button = drawer.get_by_role("button", name="Open the PDF", exact=True)
    tabs: list[Page] = []
    page.context.on("page", lambda tab: tabs.append(tab))
    with page.expect_response(lambda r: r.url.endswith(f"/documents/{missing}/file")) as answer:
        button.click()
    assert answer.value.status == 404
    status = drawer.locator("#viewer-file-status")
    expect(status).to_contain_text(f"document '{missing}' does not exist")
    expect(status).to_have_class("viewer-file-status failed")
    expect(button).to_be_enabled()
    assert tabs == []  # no tab opened
