"""Issue 19, part 3: evidence in the chat page. The stream is the server's wire contract
(`best_span` on each source, `citations` and `invalid_citations` on `done`), played by
Playwright in place of `/v1/ask/stream`; everything else is the real server. Clicking `[n]`
opens the drawer with the citation's supporting span in a <mark>; an unsupported citation looks
different; each source shows its best sentence; a PDF's page shows; an older server's stream
(none of these fields) still works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.test_chat_page import VENUS as VENUS_ANSWER
from tests.e2e.test_chat_page import ask
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

SID = "0123456789abcdef"

# Offsets are Python's (code points): the flame, one code point, is two UTF-16 units.
VENUS = (
    "# 🔥 Venus\n\nVenus is the second planet from the Sun.\nIts surface is about 464 degrees "
    "Celsius, hotter than Mercury.\nThick clouds of sulfuric acid cover it.\n\n"
    "## Rotation\n\nA day on Venus is longer than its year."
)
VENUS_HOT = "Its surface is about 464 degrees Celsius, hotter than Mercury."
VENUS_DAY = "A day on Venus is longer than its year."
MARS = "Mars is cold and dry.\nOlympus Mons on Mars is the tallest volcano of the Solar System."
MARS_BEST = "Olympus Mons on Mars is the tallest volcano of the Solar System."
MANUAL = "Chapter 2.\nThe probe carried a radar altimeter to map the clouded surface."
MANUAL_BEST = "The probe carried a radar altimeter to map the clouded surface."

TOKENS = ["🌋 Venus is ", "about 464 °C ", "[1]", ". Its day outlasts ", "its year [1]", ". "]
TOKENS += ["It has the tallest ", "volcano [2", "]."]
ANSWER = "".join(TOKENS)


def span(text: str, part: str) -> dict[str, int]:
    start = text.index(part)
    return {"start": start, "end": start + len(part)}


def source(n: int, title: str, text: str, best: str | None, page: int | None = None) -> dict:
    return {
        "n": n,
        "doc_id": f"doc{n}",
        "chunk_id": f"doc{n}:0",
        "title": title,
        "source": f"{title.lower()}.md" if page is None else f"{title.lower()}.pdf",
        "page": page,
        "score": 0.9 - n / 10,
        "text": text,
        "best_span": span(text, best) if best else None,
    }


SOURCES = [
    source(1, "Venus", VENUS, "Venus is the second planet from the Sun."),
    source(2, "Mars", MARS, MARS_BEST),
    source(3, "Manual", MANUAL, MANUAL_BEST, page=3),
]

CITATIONS = [
    {
        "n": 1,
        "chunk_id": "doc1:0",
        "answer_span": span(ANSWER, "🌋 Venus is about 464 °C [1]."),
        "source_span": span(VENUS, VENUS_HOT),
        "support": 0.82,
        "supported": True,
    },
    {
        "n": 1,
        "chunk_id": "doc1:0",
        "answer_span": span(ANSWER, "Its day outlasts its year [1]."),
        "source_span": span(VENUS, VENUS_DAY),
        "support": 0.74,
        "supported": True,
    },
    {
        "n": 2,
        "chunk_id": "doc2:0",
        "answer_span": span(ANSWER, "It has the tallest volcano [2]."),
        "source_span": span(MARS, "Mars is cold and dry."),
        "support": 0.11,
        "supported": False,
    },
]


def with_markers(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The citations as the server also sends them: each with its `[n]` marker's span."""
    out, after = [], 0
    for c in citations:
        at = ANSWER.index(f"[{c['n']}", after)
        after = ANSWER.index("]", at) + 1
        out.append({**c, "marker": {"start": at, "end": after}})
    return out


def sse_body(events: list[tuple[str, dict[str, Any]]]) -> str:
    """The events as the server frames them: `id: <stream id>.<seq>`, `event:`, `data:`."""
    frames = [
        f"id: {SID}.{seq}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
        for seq, (name, data) in enumerate(events, start=1)
    ]
    return "".join(frames)


def done(**extra: Any) -> dict[str, Any]:
    return {
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70},
        "cost": {"usd": 0.0, "reference_usd": 0.0, "reference_model": "x"},
        "latency_ms": {"retrieval": 5.0, "ttft": 9.0, "total": 120.0},
        **extra,
    }


def play(page: Page, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Answer the page's /v1/ask/stream with `events`; the request bodies sent."""
    sent: list[dict[str, Any]] = []

    def fulfil(route: Route) -> None:
        sent.append(route.request.post_data_json)
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "X-Stream-ID": SID},
            body=sse_body(events),
        )

    page.route("**/v1/ask/stream", fulfil)
    return sent


def evidence_stream(
    markers: bool = True, best_in_done: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The answer with its evidence. `best_in_done`: the sources' best spans come with `done`
    (`best_spans`, in the order of the sources), as the server computes them while the answer
    streams, rather than in the `sources` event."""
    sources = [{**s, "best_span": None} for s in SOURCES] if best_in_done else SOURCES
    events: list[tuple[str, dict[str, Any]]] = [("sources", {"sources": sources})]
    events += [("token", {"text": t}) for t in TOKENS]
    extra: dict[str, Any] = {
        "citations": with_markers(CITATIONS) if markers else CITATIONS,
        "invalid_citations": 1,
    }
    if best_in_done:
        extra["best_spans"] = [s["best_span"] for s in SOURCES]
    events.append(("done", done(**extra)))
    return events


def open_answer(page: Page, events: list[tuple[str, dict[str, Any]]]) -> Any:
    play(page, events)
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "done")
    return turn


@pytest.mark.parametrize("markers", [True, False], ids=["marker-spans", "answer-spans-only"])
def test_citation_opens_the_drawer_with_its_supporting_span_marked(
    page: Page, live_server: ThreadedLiveServer, markers: bool, tmp_path: Path
) -> None:
    turn = open_answer(page, evidence_stream(markers))
    answer = turn.locator(".answer")
    drawer = page.get_by_role("dialog")
    expect(drawer).to_be_hidden()

    cites = answer.locator("button.cite")
    expect(cites).to_have_text(["[1]", "[1]", "[2]"])
    cites.nth(0).click()
    expect(drawer).to_be_visible()
    passage = page.locator("#viewer-text")
    mark = passage.locator("mark")
    expect(mark).to_have_count(1)
    expect(mark).to_have_text(VENUS_HOT)  # the code-point offsets, read past the 🔥
    expect(mark).to_be_in_viewport()
    expect(page.locator("#viewer-doc-title")).to_have_text("Venus")
    # The passage is Markdown: headings, and its single line breaks wrap softly.
    expect(passage.locator("h1")).to_have_text("🔥 Venus")
    expect(passage.locator("h2")).to_have_text("Rotation")
    expect(passage).not_to_contain_text("#")
    expect(passage.locator("br")).to_have_count(0)
    expect(page.locator("#viewer-close")).to_be_focused()
    page.screenshot(path=tmp_path / "drawer.png")

    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(cites.nth(0)).to_be_focused()  # focus goes back where it was

    # The second [1] is another sentence of the answer: its own supporting span.
    cites.nth(1).click()
    expect(mark).to_have_text(VENUS_DAY)
    page.get_by_role("button", name="Close the passage").click()
    expect(drawer).to_be_hidden()


def test_unsupported_citation_looks_different_and_says_so(
    page: Page, live_server: ThreadedLiveServer
) -> None:
    turn = open_answer(page, evidence_stream())
    supported = turn.locator("button.cite").first
    unsupported = turn.locator("button.cite[data-n='2']")
    expect(unsupported).to_have_class("cite unsupported")
    expect(unsupported).to_have_attribute("title", "not supported by the source")
    expect(supported).not_to_have_class("cite unsupported")
    dashed = unsupported.evaluate("b => getComputedStyle(b).outlineStyle")
    assert dashed == "dashed"
    assert supported.evaluate("b => getComputedStyle(b).outlineStyle") != "dashed"

    unsupported.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#viewer-evidence")).to_contain_text("not supported by the source")
    expect(page.locator("#viewer-text mark")).to_have_text("Mars is cold and dry.")


@pytest.mark.parametrize("best_in_done", [False, True], ids=["in-sources", "in-done"])
def test_each_source_shows_its_best_sentence_and_a_pdf_its_page(
    page: Page, live_server: ThreadedLiveServer, best_in_done: bool
) -> None:
    turn = open_answer(page, evidence_stream(best_in_done=best_in_done))
    sources = turn.locator("li.source")
    expect(sources).to_have_count(3)
    best = [VENUS.split("\n")[2], MARS_BEST, MANUAL_BEST]
    expect(sources.locator(".best-sentence")).to_have_text(best)  # source 3 is not cited
    expect(sources.nth(2).locator(".meta")).to_contain_text("p. 3")
    expect(sources.nth(0).locator(".meta")).not_to_contain_text("p. ")

    # Opened from the list, a source shows its best sentence marked.
    sources.nth(2).get_by_role("button").click()
    expect(page.locator("#viewer-text mark")).to_have_text(MANUAL_BEST)
    expect(page.locator("#viewer-meta")).to_contain_text("p. 3")


def test_a_stream_without_the_evidence_fields_still_works(
    page: Page, live_server: ThreadedLiveServer
) -> None:
    """An older server: no best_span, no citations in done, markers not filtered."""
    old = [{k: v for k, v in s.items() if k != "best_span"} for s in SOURCES]
    events: list[tuple[str, dict[str, Any]]] = [("sources", {"sources": old})]
    events += [("token", {"text": t}) for t in [*TOKENS, " See [99]."]]
    events.append(("done", done()))
    turn = open_answer(page, events)
    cites = turn.locator("button.cite")
    expect(cites).to_have_count(3)
    expect(turn.locator(".answer")).to_contain_text("See [99].")  # no source 99: plain text
    expect(turn.locator("button.cite.unsupported")).to_have_count(0)
    expect(turn.locator(".best-sentence")).to_have_count(0)
    expect(turn.locator(".snippet").first).to_contain_text("Venus is the second planet")
    cites.first.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#viewer-text h1")).to_have_text("🔥 Venus")
    expect(page.locator("#viewer-text mark")).to_have_count(0)
    expect(page.locator("#viewer-evidence")).to_be_hidden()


def test_real_server_citation_highlights_the_supporting_sentence(
    page: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator
) -> None:
    """The same against the real server's stream (its citations and best spans)."""
    generator.tokens = VENUS_ANSWER
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    turn = ask(page, "How hot is Venus?")
    expect(turn).to_have_attribute("data-state", "done")
    expect(turn.locator("li.source .best-sentence").first).not_to_be_empty()
    turn.locator(".answer").get_by_role("button", name="Show source 1", exact=True).click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#viewer-text mark").first).to_contain_text("464 degrees")
    expect(page.locator("#viewer-text mark").first).to_be_in_viewport()
