"""The chat page on a server with scoped API keys, in headless Chromium: it asks for a key,
shows whose it is, lists only the collections the key reads, offers Upload only to keys that
may write, and shows the server's own words on 401, 403 and 429."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, Response, expect

from app.main import create_app
from app.services import Services, open_keys
from pipelines.core import build_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.e2e.test_chat_page import ask
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer
from tests.support.tenancy import CODEWORDS, DOCS, auth, write_collection

pytestmark = pytest.mark.slow

# who: (role, collections, requests per minute)
KEYS: dict[str, tuple[str, list[str], int | None]] = {
    "alpha_read": ("read", ["alpha"], None),
    "alpha_write": ("write", ["alpha"], None),
    "gamma_read": ("read", ["gamma"], None),  # a collection that does not exist
    "alpha_slow": ("read", ["alpha"], 3),
}
KEY_LABEL = "This server needs an API key:"
# How many pixels the page is wider than the window (a phone would scroll sideways).
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"
GRINDER = b"# Grinder\n\nClean the alpha burr grinder weekly.\n"


class KeyedLiveServer(ThreadedLiveServer):
    """The app over collections `alpha` and `beta` (tests/support/tenancy.py) with its key
    database, served by uvicorn on its own thread; `tokens` holds a token per key of KEYS."""

    def __init__(
        self, settings: Settings, embedder: SentenceTransformerEmbedder, sources: Path
    ) -> None:
        self.scripted = ScriptedGenerator()
        super().__init__(settings, embedder, self.scripted)
        self.sources = sources
        self.tokens: dict[str, str] = {}

    async def serve(self) -> None:
        core = build_core(self.settings, embedder=self.embedder)
        try:
            async with AsyncExitStack() as stack:
                for collection in DOCS:
                    await write_collection(core, self.sources, collection)
                keys, quotas = await open_keys(self.settings, stack)
                for who, (role, collections, per_minute) in KEYS.items():
                    _, token = keys.create(
                        name=who,
                        role=role,  # type: ignore[arg-type]
                        collections=collections,
                        requests_per_minute=per_minute,
                    )
                    self.tokens[who] = token
                services = Services(core=core, keys=keys, quotas=quotas)
                services.set_generator(self.generator)
                app = create_app(self.settings, services=services)
                config = uvicorn.Config(
                    app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
                )
                self.server = uvicorn.Server(config)
                await self.server.serve(sockets=[self.sock])
        finally:
            await core.close()


# Overrides conftest's `live_server` for this module, so its `page` talks to this server.
@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[KeyedLiveServer]:
    root = tmp_path_factory.mktemp("e2e-keys")
    settings = Settings(_env_file=None, data_dir=root / "data")  # keys in data/ragserve.db
    server = KeyedLiveServer(settings, embedder, root / "sources")
    server.start()
    yield server
    server.stop()


def sign_in(page: Page, token: str) -> None:
    expect(page.locator("#key-form")).to_be_visible()
    page.get_by_label(KEY_LABEL).fill(token)
    page.get_by_role("button", name="Use key").click()


def expect_collections(page: Page, options: list[str]) -> None:
    """The collection menu offers exactly `options` (waiting for the page to list them)."""
    expect(page.locator("#collection option")).to_have_text(options)


def sent_key(response: Response, path: str) -> str | None:
    """The key a request to `path` carried (None for another path, "" for no key)."""
    if not response.url.endswith(path):
        return None
    return response.request.headers.get("authorization", "").removeprefix("Bearer ")


def test_read_key_sees_its_name_its_collection_only_and_no_upload(
    page: Page, live_server: KeyedLiveServer, tmp_path: Path
) -> None:
    live_server.scripted.tokens = ["Grind fine [1]."]
    page.goto("/")
    session = page.locator("#session")
    expect(session).to_be_hidden()
    sign_in(page, live_server.tokens["alpha_read"])

    expect(page.locator("#key-form")).to_be_hidden()
    expect(session).to_be_visible()
    expect(page.locator("#session-name")).to_have_text("alpha_read")
    expect(page.locator("#session-role")).to_have_text("read")
    expect(page.get_by_label("Collection")).to_have_value("alpha")
    expect_collections(page, ["alpha (2 docs)"])
    expect(page.get_by_text("Upload…")).to_be_hidden()
    expect(page.locator("#upload")).to_be_hidden()
    expect(page.locator("#upload")).to_be_disabled()

    # What it retrieves is alpha's only, as the page shows it.
    turn = ask(page, "How long does an espresso shot take?")
    expect(turn).to_have_attribute("data-state", "done")
    sources = turn.locator("li.source")
    expect(sources.first).to_be_visible()
    shown = turn.locator(".sources-box").inner_text()
    assert "The alpha " in shown and "beta" not in shown.lower(), shown
    sources.first.get_by_role("button").click()  # the whole passage, in the drawer
    passage = page.locator("#viewer-text")
    expect(passage).to_contain_text(CODEWORDS["alpha"])
    assert CODEWORDS["beta"] not in passage.inner_text()
    page.keyboard.press("Escape")

    page.reload()  # the key is remembered
    expect(page.locator("#session-name")).to_have_text("alpha_read")
    expect(page.locator("#key-form")).to_be_hidden()
    page.screenshot(path=tmp_path / "read-key.png", full_page=True)


def test_write_key_sees_upload_and_uploads_into_its_collection(
    page: Page, live_server: KeyedLiveServer
) -> None:
    token = live_server.tokens["alpha_write"]
    page.goto("/")
    sign_in(page, token)
    expect(page.locator("#session-name")).to_have_text("alpha_write")
    expect(page.locator("#session-role")).to_have_text("write")
    expect_collections(page, ["alpha (2 docs)"])
    expect(page.get_by_text("Upload…")).to_be_visible()
    try:
        page.set_input_files(
            "#upload",
            files=[{"name": "grinder.md", "mimeType": "text/markdown", "buffer": GRINDER}],
        )
        expect(page.get_by_role("status")).to_contain_text("Uploaded to alpha: 1 added")
        expect(page.locator("#collection option[value=alpha]")).to_have_text("alpha (3 docs)")
    finally:
        with httpx.Client(base_url=live_server.url, timeout=10, headers=auth(token)) as client:
            docs = client.get("/v1/collections/alpha/documents").json()["documents"]
            for d in docs:
                if d["source"] == "grinder.md":
                    client.delete(f"/v1/collections/alpha/documents/{d['doc_id']}")


def test_wrong_key_gets_the_key_prompt_again_with_the_reason(
    page: Page, live_server: KeyedLiveServer
) -> None:
    token = live_server.tokens["alpha_read"]
    typo = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    page.goto("/")
    reason = page.locator("#key-reason")
    for wrong in (typo, "not-a-key"):  # its id but not its secret; not even shaped like one
        with page.expect_response(lambda r, w=wrong: sent_key(r, "/v1/me") == w) as answered:
            sign_in(page, wrong)
        assert answered.value.status == 401
        expect(page.locator("#key-form")).to_be_visible()
        message = answered.value.json()["error"]["message"].rstrip(".")
        expect(reason).to_have_text(f"The key was refused: {message}.")
        expect(page.locator("#session")).to_be_hidden()
        expect(page.get_by_text("Upload…")).to_be_hidden()
        assert page.evaluate("localStorage.getItem('ragserve.apiKey')") is None

    sign_in(page, token)  # the right one after all
    expect(page.locator("#session-name")).to_have_text("alpha_read")
    expect(reason).to_be_hidden()


def test_sign_out_forgets_the_key_and_the_conversation(
    page: Page, live_server: KeyedLiveServer
) -> None:
    live_server.scripted.tokens = ["Descale monthly [1]."]
    page.goto("/")
    sign_in(page, live_server.tokens["alpha_write"])
    expect(page.get_by_label("Collection")).to_have_value("alpha")
    turn = ask(page, "How often do I descale the kettle?")
    expect(turn).to_have_attribute("data-state", "done")

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#session")).to_be_hidden()
    expect(page.get_by_text("Upload…")).to_be_hidden()
    expect(page.locator("article.turn")).to_have_count(0)
    expect_collections(page, ["enter an API key"])
    assert page.evaluate("localStorage.getItem('ragserve.apiKey')") is None
    page.reload()
    expect(page.locator("#key-form")).to_be_visible()

    sign_in(page, live_server.tokens["alpha_read"])  # another key, another role
    expect(page.locator("#session-name")).to_have_text("alpha_read")
    expect(page.get_by_text("Upload…")).to_be_hidden()


def test_key_that_reads_no_collection_is_told_so(page: Page, live_server: KeyedLiveServer) -> None:
    page.goto("/")
    sign_in(page, live_server.tokens["gamma_read"])
    expect(page.locator("#session-name")).to_have_text("gamma_read")
    note = page.locator("#access-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("may read only gamma, and that collection does not exist yet")
    expect_collections(page, ["none for this key"])
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_disabled()
    expect(page.get_by_label("Your question")).to_be_disabled()


def test_forbidden_collection_shows_the_servers_message(
    page: Page, live_server: KeyedLiveServer
) -> None:
    page.goto("/")
    sign_in(page, live_server.tokens["alpha_read"])
    expect(page.get_by_label("Collection")).to_have_value("alpha")
    # A collection the page never offered (an old tab, a hand-edited page): the server says no.
    page.locator("#collection").evaluate(
        "s => { s.append(new Option('beta', 'beta')); s.value = 'beta'; }"
    )
    with page.expect_response("**/v1/ask/stream") as answered:
        turn = ask(page, "When does payroll run?")
    response = answered.value
    assert response.status == 403
    message = response.json()["error"]["message"]
    expect(turn).to_have_attribute("data-state", "error")
    expect(page.get_by_role("alert")).to_contain_text(message)
    expect(page.locator("#key-form")).to_be_hidden()  # a 403 is not a sign-in problem
    assert CODEWORDS["beta"] not in page.content()


def test_rate_limited_key_is_told_when_to_retry(page: Page, live_server: KeyedLiveServer) -> None:
    live_server.scripted.tokens = ["Twenty-five seconds [1]."]
    page.goto("/")
    sign_in(page, live_server.tokens["alpha_slow"])  # /v1/me and /v1/collections: 2 of 3
    expect(page.get_by_label("Collection")).to_have_value("alpha")
    first = ask(page, "How long does an espresso shot take?")  # 3 of 3
    expect(first).to_have_attribute("data-state", "done")
    with page.expect_response("**/v1/ask/stream") as answered:
        second = ask(page, "And a ristretto?")
    response = answered.value
    assert response.status == 429
    wait_s = int(response.headers["retry-after"])
    expect(second).to_have_attribute("data-state", "error")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(response.json()["error"]["message"])
    expect(alert).to_contain_text(re.compile(r"Try again at \d\d:\d\d:\d\d\."))
    # The time shown is the browser's clock plus Retry-After.
    shown = re.search(r"Try again at (\d\d):(\d\d):(\d\d)\.", alert.inner_text())
    assert shown is not None
    h, m, s = (int(x) for x in shown.groups())
    now = page.evaluate(
        "(() => { const d = new Date(); return [d.getHours(), d.getMinutes(), d.getSeconds()]; })()"
    )
    ahead = ((h - now[0]) * 3600 + (m - now[1]) * 60 + (s - now[2])) % 86_400
    assert wait_s - 5 <= ahead <= wait_s + 1, (ahead, wait_s)


def test_open_server_shows_nothing_about_keys(page: Page, live_server: KeyedLiveServer) -> None:
    live_server.settings.server.auth = "off"
    try:
        page.goto("/")
        expect(page.get_by_label("Collection")).to_have_value("alpha")
        expect_collections(page, ["alpha (2 docs)", "beta (2 docs)"])
        expect(page.get_by_text("Upload…")).to_be_visible()
        expect(page.locator("#session")).to_be_hidden()
        expect(page.locator("#key-form")).to_be_hidden()
    finally:
        live_server.settings.server.auth = "auto"


def test_signed_in_page_fits_a_phone_screen(
    page: Page, live_server: KeyedLiveServer, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    sign_in(page, "rag_000000000000_not-a-real-secret")
    expect(page.locator("#key-reason")).to_be_visible()
    expect(page.get_by_role("button", name="Use key")).to_be_in_viewport()
    assert page.evaluate(OVERFLOW) <= 0, "the key prompt is wider than the screen"
    page.screenshot(path=tmp_path / "phone-key.png")
    sign_in(page, live_server.tokens["alpha_write"])
    expect(page.locator("#session-name")).to_have_text("alpha_write")
    expect(page.get_by_label("Collection")).to_have_value("alpha")
    expect(page.get_by_text("Upload…")).to_be_visible()
    for name in ("Sign out", "New chat", "Ask"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_in_viewport()
    overflow = page.evaluate(OVERFLOW)
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"
    page.screenshot(path=tmp_path / "phone.png", full_page=True)
