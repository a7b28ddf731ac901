"""The chat page in headless Chromium against a real server: stream, cite, stop, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Locator, Page, Route, expect

from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

VENUS = ["Venus ", "has ", "the ", "hottest ", "surface: ", "about ", "**464 ", "degrees "]
VENUS += ["Celsius** ", "[1]", "."]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s: {condition}")
        time.sleep(0.05)


def ask(page: Page, question: str) -> Locator:
    """Type a question, press Ask, and return the new turn."""
    turns = page.locator("article.turn")
    before = turns.count()
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(turns).to_have_count(before + 1)
    return turns.nth(before)


def answer_growth(page: Page, turn: Locator, timeout_s: float = 15.0) -> list[int]:
    """The answer's text length at each change seen while the turn was still streaming."""
    lengths: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state, text = turn.evaluate(
            "t => [t.dataset.state, t.querySelector('.answer').textContent]"
        )
        if state != "streaming":
            return lengths
        if text and (not lengths or len(text) != lengths[-1]):
            lengths.append(len(text))
        time.sleep(0.03)
    raise AssertionError(f"the answer was still streaming after {timeout_s}s")


def test_page_streams_an_answer_with_sources_and_citations(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator, tmp_path: Path
) -> None:
    generator.tokens, generator.delay_s = VENUS, 0.12
    response = page.goto("/")
    assert response is not None and response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page).to_have_title("ragserve — ask your documents")
    collection = page.get_by_label("Collection")
    expect(collection).to_have_value("default")
    expect(collection.locator("option", has_text="default")).to_have_count(1)

    turn = ask(page, "How hot is Venus?")
    growth = answer_growth(page, turn)
    assert len(growth) >= 3, f"tokens did not arrive one by one: {growth}"
    assert growth == sorted(growth), growth

    expect(turn).to_have_attribute("data-state", "done")
    answer = turn.locator(".answer")
    expect(answer).to_have_attribute("aria-live", "polite")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer.locator("strong")).to_have_text("464 degrees Celsius")  # Markdown rendered
    expect(turn.locator(".status")).to_contain_text("Done")

    sources = turn.locator("li.source")
    assert sources.count() >= 1
    first = sources.first
    expect(first.locator(".badge")).to_have_text("1")
    expect(first.locator(".source-title")).to_have_text("The Solar System: a short field guide")
    expect(first.locator(".meta")).to_contain_text("solar-system.html")
    expect(first.locator(".snippet")).not_to_be_empty()
    for title in sources.locator(".source-title").all_inner_texts():
        assert title.strip()

    viewer = page.locator("#viewer-text")
    expect(viewer).to_be_hidden()
    answer.get_by_role("button", name="Show source 1", exact=True).click()
    expect(viewer).to_be_visible()
    expect(viewer).to_contain_text("464 degrees")
    expect(page.locator("#viewer-doc-title")).to_have_text("The Solar System: a short field guide")
    expect(first).to_have_class("source active")
    expect(page.get_by_role("alert")).to_be_hidden()

    page.screenshot(path=tmp_path / "chat.png", full_page=True)


def test_stop_aborts_the_stream_and_the_generation(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    first = ask(page, "How hot is Venus?")
    expect(first).to_have_attribute("data-state", "done")
    stop = page.get_by_role("button", name="Stop", exact=True)
    expect(stop).to_be_disabled()

    # A long, slow follow-up: the page sends the conversation; the rewrite answers at once.
    # Words that never repeat: a repeating answer is stopped by the page itself (below).
    generator.tokens, generator.delay_s = [f"word{i} " for i in range(400)], 0.05
    generator.rewrite_to = "How hot is the surface of Venus?"
    second = ask(page, "Why is it so hot?")
    expect(second.locator(".answer")).to_contain_text("word1 word2")
    expect(stop).to_be_enabled()
    stop.click()

    expect(second).to_have_attribute("data-state", "stopped")
    expect(second.locator(".status")).to_have_text("Stopped.")
    expect(stop).to_be_disabled()
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()
    wait_until(lambda: len(generator.aborted) == 1, timeout_s=10)
    final = generator.requests[-1]
    assert generator.aborted == [final.request_id]
    assert generator.active == set()
    # The conversation so far, after the prompt's system and worked example turns.
    roles = [m.role for m in final.messages]
    assert roles[0] == "system" and roles[-3:] == ["user", "assistant", "user"]
    assert final.messages[-1].content.endswith("Why is it so hot?")

    stopped_at = second.locator(".answer").inner_text()
    time.sleep(0.5)
    assert second.locator(".answer").inner_text() == stopped_at
    assert stopped_at.count("word") < 400
    expect(page.get_by_role("alert")).to_be_hidden()


def test_error_event_mid_stream_is_shown(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    generator.fail_after = 2
    page.goto("/")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "error")
    expect(page.get_by_role("alert")).to_contain_text("upstream generator died mid-stream")
    expect(turn.locator(".answer")).to_have_text("Venus is")
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()


def test_error_before_the_stream_is_shown_from_the_json_envelope(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    generator.fail_before_first = True
    page.goto("/")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "error")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("upstream generator is down")
    expect(alert).to_contain_text("Please try again.")  # 503 is retryable


def test_model_html_in_the_answer_is_shown_as_text(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    generator.tokens = [
        "<img src=x onerror=\"document.title='owned'\">",
        "<script>",
        "x()",
        "</script>",
    ]
    generator.tokens += ["Plain *text* [1] and [99]."]
    page.goto("/")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "done")
    answer = turn.locator(".answer")
    expect(answer.locator("em")).to_have_text("text")
    assert answer.locator("img, script").count() == 0
    expect(answer).to_contain_text("<script>x()</script>")  # shown as text, not run
    # [99] names no source: the server drops it (the page would show it as plain text, see
    # test_chat_page_evidence.py), never as a citation.
    expect(answer.locator("button.cite")).to_have_count(1)
    expect(answer).not_to_contain_text("[99]")
    expect(page).to_have_title("ragserve — ask your documents")


def test_static_files_serve_the_page_assets_only(live_server: ThreadedLiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        for name in ("app.js", "style.css", "marked.umd.js", "purify.min.js"):
            r = client.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["cache-control"] == "no-cache"
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        for bad in ("/static/nope.js", "/static/%2e%2e/main.py", "/static/..%2froutes/ui.py"):
            r = client.get(bad)
            assert r.status_code == 404, bad
            assert r.json()["error"]["code"] == "not_found"
        assert "/" not in client.get("/openapi.json").json()["paths"]


STARTER = (
    b"# Sourdough starter care\n\nFeed the starter once a day with equal weights of rye flour "
    b"and water. A healthy starter doubles within six hours of feeding.\n"
)


def test_upload_adds_a_document_the_next_answer_cites(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    generator.tokens = ["Feed it daily [1]."]
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    try:
        page.set_input_files(
            "#upload",
            files=[{"name": "starter.md", "mimeType": "text/markdown", "buffer": STARTER}],
        )
        notice = page.get_by_role("status")
        expect(notice).to_contain_text("Uploaded to default: 1 added")
        expect(page.locator("#collection option[value=default]")).to_have_text("default (4 docs)")
        turn = ask(page, "How often do I feed a sourdough starter?")
        expect(turn).to_have_attribute("data-state", "done")
        first = turn.locator("li.source").first
        expect(first.locator(".source-title")).to_have_text("Sourdough starter care")
        expect(first.locator(".meta")).to_contain_text("starter.md")
        # A file the service cannot read is named in the error banner.
        page.set_input_files(
            "#upload",
            files=[{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF"}],
        )
        expect(page.get_by_role("alert")).to_contain_text("scan.pdf")
    finally:
        with httpx.Client(base_url=live_server.url, timeout=10) as client:
            docs = client.get("/v1/collections/default/documents").json()["documents"]
            for d in docs:
                if d["source"] == "starter.md":
                    client.delete(f"/v1/collections/default/documents/{d['doc_id']}")


def test_a_server_with_an_api_key_asks_for_it_once(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    from pydantic import SecretStr

    generator.tokens = VENUS
    live_server.settings.server.api_key = SecretStr("page-key")
    try:
        page.goto("/")
        key_form = page.locator("#key-form")
        expect(key_form).to_be_visible()
        page.get_by_label("This server needs an API key:").fill("wrong")
        page.get_by_role("button", name="Use key").click()
        expect(key_form).to_be_visible()  # 401 again: asked again
        page.get_by_label("This server needs an API key:").fill("page-key")
        page.get_by_role("button", name="Use key").click()
        expect(key_form).to_be_hidden()
        expect(page.get_by_label("Collection")).to_have_value("default")
        turn = ask(page, "How hot is Venus?")
        expect(turn).to_have_attribute("data-state", "done")
        page.reload()  # the key is remembered
        expect(page.get_by_label("Collection")).to_have_value("default")
        expect(key_form).to_be_hidden()
    finally:
        live_server.settings.server.api_key = None


def test_page_asks_for_a_bounded_answer(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    with page.expect_request("**/v1/ask/stream") as sent:
        turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "done")
    body = sent.value.post_data_json
    assert body["question"] == "How hot is Venus?"
    assert isinstance(body["max_tokens"], int) and 64 <= body["max_tokens"] <= 1024, body
    assert generator.requests[-1].max_tokens == body["max_tokens"]


def test_repeating_answer_is_stopped_with_a_note_and_the_stream_deleted(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    """Issue 18: a small model looping on "a layer of a layer of…" until max_tokens."""
    generator.tokens = ["a ", "layer ", "of "]  # forever
    generator.forever, generator.delay_s = True, 0.01
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)

    turn = ask(page, "What covers Venus?")
    expect(turn).to_have_attribute("data-state", "stopped")
    expect(turn.locator(".status")).to_have_text("Stopped: the answer was repeating itself.")
    # The answer up to its first "a layer of"; what repeated is not shown.
    expect(turn.locator(".answer")).to_have_text("a layer of")
    assert generator.abandoned.wait(10), "the generation went on after the page stopped"
    assert generator.active == set()
    assert len(deletes) == 1 and "/v1/ask/stream/" in deletes[0], deletes
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    expect(page.get_by_role("alert")).to_be_hidden()


OTHER = b"# Kettle care\n\nDescale the kettle once a month with white vinegar.\n"


@pytest.fixture
def second_collection(live_server: ThreadedLiveServer) -> Iterator[str]:
    """A collection beside `default` (one uploaded file), deleted afterwards."""
    name = "kitchen"
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        files = {"files": ("kettle.md", OTHER, "text/markdown")}
        r = client.post(f"/v1/collections/{name}/documents", files=files)
        assert r.is_success, r.text
        yield name
        client.delete(f"/v1/collections/{name}")


def test_switching_collection_asks_before_it_clears_the_conversation(
    page: Page,
    live_server: ThreadedLiveServer,
    generator: ScriptedGenerator,
    second_collection: str,
) -> None:
    page.goto("/")
    collection = page.get_by_label("Collection")
    expect(collection).to_have_value("default")
    collection.select_option(second_collection)  # no conversation yet: nothing to ask
    expect(collection).to_have_value(second_collection)
    collection.select_option("default")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "done")

    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    collection.select_option(second_collection)
    expect(collection).to_have_value("default")  # cancelled: the old one stays selected
    assert len(asked) == 1 and "clears the conversation" in asked[0], asked
    expect(page.locator("article.turn")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())
    collection.select_option(second_collection)
    expect(collection).to_have_value(second_collection)
    expect(page.locator("article.turn")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()

    # The next question goes to the new collection, as a new conversation.
    generator.tokens = ["Descale monthly [1]."]
    with page.expect_request("**/v1/ask/stream") as sent:
        turn = ask(page, "How often do I descale the kettle?")
    expect(turn).to_have_attribute("data-state", "done")
    body = sent.value.post_data_json
    assert body["collection"] == second_collection and "messages" not in body, body
    expect(turn.locator(".source-title").first).to_have_text("Kettle care")


def test_repeat_after_a_good_start_keeps_the_start_and_one_copy(
    page: Page, live_server: ThreadedLiveServer
) -> None:
    """The stream played by Playwright: a sentence, then "a layer of " over and over."""
    sid = "00000000000000ab"
    texts = ["Venus is ", "wrapped in ", "clouds, ", "a layer of "] + ["a layer of "] * 60
    frames = [("sources", {"sources": []})] + [("token", {"text": t}) for t in texts]
    body = "".join(
        f"id: {sid}.{seq}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
        for seq, (name, data) in enumerate(frames, start=1)
    )
    page.route(
        "**/v1/ask/stream",
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "X-Stream-ID": sid},
            body=body,
        ),
    )
    deleted: list[str] = []

    def delete(route: Route) -> None:
        deleted.append(route.request.method)
        route.fulfill(status=204)

    page.route(f"**/v1/ask/stream/{sid}", delete)
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    turn = ask(page, "What covers Venus?")
    expect(turn).to_have_attribute("data-state", "stopped")
    expect(turn.locator(".status")).to_have_text("Stopped: the answer was repeating itself.")
    expect(turn.locator(".answer")).to_have_text("Venus is wrapped in clouds, a layer of")
    wait_until(lambda: deleted == ["DELETE"])
