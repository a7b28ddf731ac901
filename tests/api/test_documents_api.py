"""Upload, list and delete documents over HTTP: the real ingest job, model and Edge store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines.identity import document_id
from tests.support.documents import CORRUPT_PDF, write_pdf
from tests.support.servers import in_process_client, live_server

GUIDE = (
    "# Sourdough starter care\n\n"
    "Feed the starter once a day with equal weights of rye flour and water at 24 degrees. "
    "A healthy starter doubles within six hours of feeding and smells of yoghurt.\n"
)
GUIDE_V2 = (
    "# Sourdough starter care\n\n"
    "Keep the starter in the fridge and feed it weekly with wholemeal spelt flour. "
    "Before baking, give it two warm feeds so that it is lively again.\n"
)


def _files(*items: tuple[str, bytes | str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", (name, data.encode() if isinstance(data, str) else data, "text/plain"))
        for name, data in items
    ]


async def _upload(
    client: httpx.AsyncClient, *items: tuple[str, bytes | str], collection: str = "default"
) -> httpx.Response:
    return await client.post(f"/v1/collections/{collection}/documents", files=_files(*items))


async def _top(client: httpx.AsyncClient, query: str, **body: Any) -> list[dict[str, Any]]:
    r = await client.post("/v1/search", json={"query": query, "k": 3, **body})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    return hits


async def test_upload_lands_and_is_searchable(client: httpx.AsyncClient) -> None:
    r = await _upload(client, ("starter.md", GUIDE))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (1, 0, 0, [])
    assert body["files"] == [
        {"source": "starter.md", "doc_id": document_id("default", "starter.md"), "chunks": 1}
    ]
    hits = await _top(client, "how often should I feed a sourdough starter?")
    assert hits[0]["source"] == "starter.md"
    assert hits[0]["title"] == "Sourdough starter care"
    assert "rye flour" in hits[0]["text"]


async def test_reupload_is_idempotent_and_a_change_replaces_chunks(
    client: httpx.AsyncClient,
) -> None:
    assert (await _upload(client, ("starter.md", GUIDE))).status_code == 201
    again = await _upload(client, ("starter.md", GUIDE))
    assert again.status_code == 200, again.text
    assert (again.json()["unchanged"], again.json()["chunks"]) == (1, 0)
    changed = await _upload(client, ("starter.md", GUIDE_V2))
    assert changed.status_code == 201
    assert changed.json()["updated"] == 1
    hits = await _top(client, "sourdough starter flour", filters={"source": "starter.md"})
    assert [h["text"] for h in hits] == [hits[0]["text"]]  # one chunk, no stale copy
    assert "spelt" in hits[0]["text"] and "rye" not in hits[0]["text"]


async def test_list_then_delete_a_document(client: httpx.AsyncClient) -> None:
    await _upload(client, ("starter.md", GUIDE))
    listed = await client.get("/v1/collections/default/documents")
    assert listed.status_code == 200
    docs = listed.json()["documents"]
    assert listed.json()["total"] == 4  # the three samples and the upload
    mine = next(d for d in docs if d["source"] == "starter.md")
    assert mine == {
        "doc_id": document_id("default", "starter.md"),
        "source": "starter.md",
        "chunks": 1,
    }
    page = (await client.get("/v1/collections/default/documents?limit=2&offset=1")).json()
    assert page["documents"] == docs[1:3]
    one = (await client.get("/v1/collections/default/documents?source=starter.md")).json()
    assert (one["total"], one["documents"]) == (1, [mine])

    gone = await client.delete(f"/v1/collections/default/documents/{mine['doc_id']}")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"collection": "default", "doc_id": mine["doc_id"], "deleted_chunks": 1}
    hits = await _top(client, "sourdough starter rye flour")
    assert all(h["source"] != "starter.md" for h in hits)
    assert (await client.get("/v1/collections/default/documents")).json()["total"] == 3

    again = await client.delete(f"/v1/collections/default/documents/{mine['doc_id']}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "document_not_found"


async def test_a_corpus_file_lands_one_document_per_line(client: httpx.AsyncClient) -> None:
    corpus = (
        '{"_id": "s1", "title": "Starter feeding", "text": "Feed the sourdough starter daily '
        'with rye flour and water."}\n'
        '{"_id": "s2", "title": "Oven spring", "text": "Bake the loaf in a preheated Dutch '
        'oven at 250 degrees with the lid on."}\n'
    )
    r = await _upload(client, ("/tmp/x/bakery.jsonl", corpus), collection="bakery")
    assert r.status_code == 201, r.text
    assert r.json()["added"] == 2
    assert r.json()["files"] == [{"source": "bakery.jsonl", "doc_id": None, "chunks": 2}]
    hits = await _top(client, "what temperature for the dutch oven?", collection="bakery")
    assert hits[0]["source"] == "bakery.jsonl"
    assert hits[0]["title"] == "Oven spring"

    again = await _upload(client, ("bakery.jsonl", corpus), collection="bakery")
    assert again.status_code == 200, again.text
    assert (again.json()["unchanged"], again.json()["chunks"]) == (2, 0)
    listed = (await client.get("/v1/collections/bakery/documents?source=bakery.jsonl")).json()
    keys = ("bakery.jsonl#s1", "bakery.jsonl#s2")
    assert {d["doc_id"] for d in listed["documents"]} == {document_id("bakery", k) for k in keys}


async def test_upload_creates_a_collection(client: httpx.AsyncClient) -> None:
    r = await _upload(client, ("notes.txt", GUIDE), collection="kitchen")
    assert r.status_code == 201, r.text
    hits = await _top(client, "sourdough", collection="kitchen")
    assert {h["source"] for h in hits} == {"notes.txt"}
    names = [c["name"] for c in (await client.get("/v1/collections")).json()["collections"]]
    assert names == ["default", "kitchen"]


async def test_a_corrupt_file_is_reported_and_the_rest_lands(client: httpx.AsyncClient) -> None:
    r = await _upload(client, ("broken.pdf", CORRUPT_PDF), ("starter.md", GUIDE))
    assert r.status_code == 201, r.text
    body = r.json()
    assert [f["source"] for f in body["failed"]] == ["broken.pdf"]
    assert body["failed"][0]["reason"]
    assert [f["source"] for f in body["files"]] == ["starter.md"]


@pytest.mark.parametrize(
    ("items", "status", "code", "words"),
    [
        ([("broken.pdf", CORRUPT_PDF)], 422, "invalid_request", "broken.pdf"),
        ([("empty.txt", b"")], 422, "invalid_request", "empty file"),
        ([("tool.exe", b"MZ\x90\x00")], 415, "unsupported_media_type", "'.exe' for 'tool.exe'"),
        ([("a.md", GUIDE), ("a.md", GUIDE)], 422, "invalid_request", "twice"),
        ([(".env", b"SECRET=1")], 422, "invalid_request", "invalid file name"),
    ],
)
async def test_bad_uploads_are_4xx_naming_the_problem_and_land_nothing(
    client: httpx.AsyncClient,
    items: list[tuple[str, bytes | str]],
    status: int,
    code: str,
    words: str,
) -> None:
    r = await _upload(client, *items)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert (await client.get("/v1/collections/default/documents")).json()["total"] == 3


async def test_a_path_in_the_file_name_is_dropped(client: httpx.AsyncClient) -> None:
    r = await _upload(client, ("../../etc/starter.md", GUIDE))
    assert r.status_code == 201, r.text
    assert r.json()["files"][0]["source"] == "starter.md"


async def test_malformed_requests_are_4xx_naming_what_was_wrong(client: httpx.AsyncClient) -> None:
    no_files = await client.post("/v1/collections/default/documents", data={"x": "1"})
    assert no_files.status_code == 422
    assert "files" in no_files.json()["error"]["message"]
    bad_name = await _upload(client, ("a.md", GUIDE), collection="..bad")
    assert bad_name.status_code == 422
    assert "invalid collection name" in bad_name.json()["error"]["message"]
    missing = await client.get("/v1/collections/nope/documents")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "collection_not_found"
    assert (await client.get("/v1/collections/default/documents?limit=0")).status_code == 422


@pytest.fixture
async def small_limit_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    services.settings.server.max_upload_mb = 1
    async with in_process_client(create_app(services.settings, services=services)) as c:
        yield c


async def test_a_file_over_the_limit_is_413(small_limit_client: httpx.AsyncClient) -> None:
    big = ("x" * 1023 + "\n") * 1100  # 1.07 MB
    r = await _upload(small_limit_client, ("big.txt", big))
    assert r.status_code == 413, r.text
    assert "'big.txt' is 1.1 MB; the limit is 1 MB" in r.json()["error"]["message"]


async def test_openapi_documents_the_upload(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    path = spec["paths"]["/v1/collections/{collection}/documents"]
    assert {"get", "post"} <= path.keys()
    assert "multipart/form-data" in path["post"]["requestBody"]["content"]
    assert "delete" in spec["paths"]["/v1/collections/{collection}/documents/{doc_id}"]


async def test_pdf_upload_over_loopback_http(services: Services, tmp_path: Path) -> None:
    """A real multipart request through uvicorn: a two-page PDF lands with its pages."""
    pdf = write_pdf(
        tmp_path / "field-notes.pdf", ["Llamas hum to calm their young.", "Alpacas spit."]
    )
    async with (
        live_server(create_app(services.settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        with pdf.open("rb") as fh:
            r = await client.post(
                "/v1/collections/default/documents",
                files={"files": ("field-notes.pdf", fh, "application/pdf")},
            )
        assert r.status_code == 201, r.text
        assert r.json()["files"][0]["source"] == "field-notes.pdf"
        hits = await _top(client, "which animal hums to its young?", filters={"page": 1})
    assert hits[0]["source"] == "field-notes.pdf"
    assert hits[0]["title"] == "field-notes"
    assert "Llamas hum" in hits[0]["text"]
