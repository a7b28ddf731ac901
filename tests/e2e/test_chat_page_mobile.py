"""Issue 18: the chat page on a 390-px phone screen, against the real server. The header is one
compact row, the question's placeholder fits its box, and a source opens in a drawer over the
page whose heading no sticky header covers (close button, Escape, focus back)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_chat_page import VENUS, ask
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"
# The placeholder's width in the textarea's own font, beside the room the textarea has for it.
PLACEHOLDER_FIT = """t => {
  const style = getComputedStyle(t);
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = t.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {
    text: t.placeholder, width: ctx.measureText(t.placeholder).width, room,
    scrollWidth: t.scrollWidth, clientWidth: t.clientWidth,
  };
}"""
# Whether the element at the centre of `el` is `el` itself or inside it: nothing covers it.
UNCOVERED = """el => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return hit !== null && el.contains(hit);
}"""


@pytest.fixture
def phone(page: Page) -> Page:
    page.set_viewport_size(PHONE)
    return page


def test_header_is_one_compact_row_on_a_phone(
    phone: Page, live_server: ThreadedLiveServer, tmp_path: Path
) -> None:
    page = phone
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    header = page.locator("header.topbar").bounding_box()
    assert header is not None
    assert header["height"] <= 0.2 * PHONE["height"], header
    brand = page.locator(".brand").bounding_box()
    new_chat = page.get_by_role("button", name="New chat", exact=True)
    expect(new_chat).to_be_in_viewport()
    select = page.get_by_label("Collection")
    expect(select).to_be_in_viewport()
    boxes = [brand, select.bounding_box(), new_chat.bounding_box()]
    assert all(b is not None for b in boxes)
    middles = [b["y"] + b["height"] / 2 for b in boxes if b is not None]
    assert max(middles) - min(middles) < 12, f"not one row: {boxes}"
    select_box = select.bounding_box()
    assert select_box is not None and select_box["width"] >= 100, select_box
    assert page.evaluate(OVERFLOW) <= 0
    page.screenshot(path=tmp_path / "phone-header.png")


def test_question_placeholder_fits_on_a_phone_and_is_whole_on_a_desktop(
    phone: Page, live_server: ThreadedLiveServer
) -> None:
    page = phone
    page.goto("/")
    question = page.get_by_label("Your question")
    fit = question.evaluate(PLACEHOLDER_FIT)
    assert fit["text"].startswith("Ask a question"), fit
    assert fit["width"] <= fit["room"], f"the placeholder is cut: {fit}"
    assert fit["scrollWidth"] <= fit["clientWidth"], fit

    page.set_viewport_size({"width": 1200, "height": 900})
    expect(question).to_have_attribute(
        "placeholder", "Ask a question… (Enter to send, Shift+Enter for a new line)"
    )
    fit = question.evaluate(PLACEHOLDER_FIT)
    assert fit["width"] <= fit["room"], f"the placeholder is cut: {fit}"


def test_a_source_opens_in_a_drawer_over_the_page_on_a_phone(
    phone: Page, live_server: ThreadedLiveServer, generator: ScriptedGenerator, tmp_path: Path
) -> None:
    page = phone
    generator.tokens = VENUS
    page.goto("/")
    expect(page.get_by_label("Collection")).to_have_value("default")
    for question in ("How hot is Venus?", "And its surface?"):  # a conversation to scroll
        turn = ask(page, question)
        expect(turn).to_have_attribute("data-state", "done")

    opener = turn.locator("li.source").first.get_by_role("button")
    opener.click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_be_visible()
    expect(drawer).to_be_in_viewport(ratio=1)
    box = drawer.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= PHONE["width"] + 0.5, box
    assert box["y"] + box["height"] <= PHONE["height"] + 0.5, box
    heading = page.locator("#viewer-title")
    expect(heading).to_be_in_viewport(ratio=1)
    assert heading.evaluate(UNCOVERED), "something covers the drawer's heading"
    close = page.get_by_role("button", name="Close the passage")
    expect(close).to_be_focused()
    assert close.evaluate(UNCOVERED), "something covers the close button"
    expect(page.locator("#viewer-text")).to_contain_text("464 degrees")
    page.screenshot(path=tmp_path / "phone-drawer.png")

    close.click()
    expect(drawer).to_be_hidden()
    expect(opener).to_be_focused()

    turn.locator(".answer").get_by_role("button", name="Show source 1", exact=True).click()
    expect(drawer).to_be_visible()
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert page.evaluate(OVERFLOW) <= 0
