"""/docs, /redoc and the chat page on a machine without internet: Chromium with every request
that would leave loopback blocked (and recorded) still shows the API's documentation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from tests.e2e.conftest import TIMEOUT_MS
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow


class Offline:
    """A browser page whose requests off 127.0.0.1 are aborted, as on an air-gapped machine;
    `blocked` lists them, `served` the loopback ones."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.blocked: list[str] = []
        self.served: list[str] = []

    def route(self, route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            self.served.append(request.url)
            route.continue_()
        else:
            self.blocked.append(request.url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline(browser: Browser, live_server: ThreadedLiveServer, tmp_path: Path) -> Iterator[Offline]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    offline = Offline(page)
    context.route("**/*", offline.route)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield offline
    page.screenshot(path=tmp_path / "page.png")
    context.close()
    assert errors == [], f"the page raised errors: {errors}"


def test_swagger_ui_shows_the_operations_with_the_network_blocked(offline: Offline) -> None:
    page = offline.page
    response = page.goto("/docs")
    assert response is not None and response.status == 200
    expect(page.locator(".opblock-summary-path[data-path='/v1/ask']").first).to_be_visible()
    expect(page.locator(".opblock-summary-path[data-path='/v1/search']").first).to_be_visible()
    favicon = page.locator("link[rel='shortcut icon']").get_attribute("href")
    assert favicon is not None and favicon.startswith("/static/vendor/")
    assert any("/static/vendor/swagger-ui/swagger-ui-bundle.js" in u for u in offline.served)
    assert offline.blocked == [], f"/docs tried to leave loopback: {offline.blocked}"


def test_swagger_ui_authorize_sends_the_bearer_key(offline: Offline) -> None:
    page = offline.page
    page.goto("/docs")
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    expect(dialog.get_by_text("HTTPBearer")).to_be_visible()
    dialog.get_by_label("auth-bearer-value").fill("rag_test_key")
    dialog.get_by_role("button", name="Apply credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.get_by_role("button", name="Close").first.click()

    # Try GET /v1/collections: the request Swagger UI sends carries the key.
    operation = (
        page.locator(".opblock-get")
        .filter(has=page.locator(".opblock-summary-path[data-path='/v1/collections']"))
        .first
    )
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    with page.expect_request(lambda r: urlsplit(r.url).path == "/v1/collections") as sent:
        operation.get_by_role("button", name="Execute").click()
    assert sent.value.headers.get("authorization") == "Bearer rag_test_key"
    assert offline.blocked == [], f"/docs tried to leave loopback: {offline.blocked}"


def test_redoc_renders_the_api_with_the_network_blocked(offline: Offline) -> None:
    page = offline.page
    response = page.goto("/redoc")
    assert response is not None and response.status == 200
    expect(page.locator(".api-info h1").first).to_contain_text("ragserve")
    expect(page.get_by_text("/v1/ask/stream").first).to_be_attached()
    expect(page.locator("[data-section-id^='tag/']").first).to_be_attached()
    assert any("/static/vendor/redoc/redoc.standalone.js" in u for u in offline.served)
    assert offline.blocked == [], f"/redoc tried to leave loopback: {offline.blocked}"


def test_chat_page_makes_no_request_off_loopback(offline: Offline) -> None:
    page = offline.page
    response = page.goto("/")
    assert response is not None and response.status == 200
    expect(page.get_by_label("Your question")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert any(urlsplit(u).path.startswith("/v1/") for u in offline.served)
    assert offline.blocked == [], f"the chat page tried to leave loopback: {offline.blocked}"
