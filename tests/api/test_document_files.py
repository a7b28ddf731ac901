"""GET /v1/collections/{c}/documents/{doc_id}/file: the uploaded file, byte for byte, to a key
that may read its document, as a PDF inline and markup never as HTML; 404 for another group's
document, an unknown or malformed id, a document whose original is not kept, and once the
document (or its collection) is deleted, with the kept copy gone from disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.services import Services, open_keys
from pipelines.core import Core
from pipelines.identity import document_id
from tests.support.documents import write_pdf
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client
from tests.support.tenancy import auth

C = "library"


@dataclass
class Library:
    client: httpx.AsyncClient
    originals: Path
    tokens: dict[str, str]
    pdf: bytes

    def h(self, who: str) -> dict[str, str]:
        return auth(self.tokens[who])

    async def upload(
        self, name: str, data: bytes, groups: str = "", who: str = "admin"
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/collections/{C}/documents",
            files=[("files", (name, data, "application/octet-stream"))],
            data={"groups": groups},
            headers=self.h(who),
        )

    async def file(self, doc_id: str, who: str = "admin", collection: str = C) -> httpx.Response:
        url = f"/v1/collections/{collection}/documents/{doc_id}/file"
        return await self.client.get(url, headers=self.h(who))


@pytest.fixture
async def lib(core: Core, tmp_path: Path) -> AsyncIterator[Library]:
    async with AsyncExitStack() as stack:
        keys, quotas = await open_keys(core.settings, stack)
        services = Services(core=core, keys=keys, quotas=quotas)
        services.set_generator(ScriptedGenerator())
        tokens = {}
        for who, role, collections, groups in (
            ("admin", "admin", ["*"], []),
            ("hr", "read", [C], ["hr"]),
            ("finance", "read", [C], ["finance"]),
            ("outsider", "read", ["other"], []),
        ):
            _, tokens[who] = keys.create(
                name=who,
                role=role,  # type: ignore[arg-type]
                collections=collections,
                groups=groups,
            )
        client = await stack.enter_async_context(
            in_process_client(create_app(core.settings, services=services))
        )
        pdf = write_pdf(
            tmp_path / "manual.pdf",
            ["Pump manual: prime the pump first.", "Page two: bleed the air valve."],
        ).read_bytes()
        built = Library(client, core.settings.originals_dir, tokens, pdf)
        r = await built.upload("manual.pdf", pdf, groups="hr")
        assert r.status_code == 201, r.text
        yield built


PDF_ID = document_id(C, "manual.pdf")


async def test_a_reader_of_the_document_gets_the_uploaded_pdf_inline(lib: Library) -> None:
    r = await lib.file(PDF_ID, who="hr")
    assert r.status_code == 200, r.text
    assert r.content == lib.pdf
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == 'inline; filename="manual.pdf"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (lib.originals / C / PDF_ID).read_bytes() == lib.pdf


async def test_another_groups_key_gets_404_and_another_collections_key_403(
    lib: Library,
) -> None:
    r = await lib.file(PDF_ID, who="finance")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "document_not_found"
    assert lib.pdf[:64] not in r.content
    # Out of the key's collections: refused as every read of the collection is (list_documents).
    r = await lib.file(PDF_ID, who="outsider")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "doc_id",
    [
        "0" * 32,  # well-formed, no such document
        PDF_ID.upper(),  # ids are lower-case hex
        PDF_ID[:31],
        PDF_ID + "0",
        "..",
        "%2e%2e",
        "..%2F..%2Fqdrant",
        f"..%2F{C}%2F{PDF_ID}",
    ],
)
async def test_an_unknown_or_malformed_doc_id_is_404(lib: Library, doc_id: str) -> None:
    r = await lib.file(doc_id)
    assert r.status_code in (404, 422), r.text
    assert lib.pdf[:64] not in r.content


async def test_a_collection_name_that_walks_out_is_refused(lib: Library) -> None:
    r = await lib.file(PDF_ID, collection="..%2F..%2Foriginals%2Flibrary")
    assert r.status_code in (404, 422), r.text
    assert lib.pdf[:64] not in r.content


async def test_deleting_the_document_removes_its_file(lib: Library) -> None:
    kept = lib.originals / C / PDF_ID
    assert kept.is_file()
    gone = await lib.client.delete(
        f"/v1/collections/{C}/documents/{PDF_ID}", headers=lib.h("admin")
    )
    assert gone.status_code == 200, gone.text
    r = await lib.file(PDF_ID, who="hr")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "document_not_found"
    assert not kept.exists()


async def test_deleting_the_collection_removes_its_files(lib: Library) -> None:
    assert (lib.originals / C / PDF_ID).is_file()
    r = await lib.client.delete(f"/v1/collections/{C}", headers=lib.h("admin"))
    assert r.status_code == 204, r.text
    assert not (lib.originals / C).exists()


async def test_an_uploaded_html_page_is_never_served_as_html(lib: Library) -> None:
    page = b"<html><body><h1>Pump</h1><p>Prime it.</p><script>alert(1)</script></body></html>"
    assert (await lib.upload("page.html", page)).status_code == 201
    r = await lib.file(document_id(C, "page.html"))
    assert r.status_code == 200, r.text
    assert r.content == page
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_a_corpus_line_has_no_original_and_says_so(lib: Library) -> None:
    corpus = b'{"_id": "p1", "title": "Valves", "text": "Bleed the air valve of the pump."}\n'
    assert (await lib.upload("pumps.jsonl", corpus)).status_code == 201
    r = await lib.file(document_id(C, "pumps.jsonl#p1"))
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "original_not_kept"
    assert "RAG_KEEP_ORIGINALS" in error["message"]
