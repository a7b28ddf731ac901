"""Issue 14, finding 7: what a client sees never names a server path, and the request id it
gets back is a bounded, safe one."""

from __future__ import annotations

import os
import re
import tempfile

import httpx
import pytest

from app.services import Services
from tests.support.fakes import ScriptedGenerator
from tests.support.sse import parse_events

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@pytest.mark.parametrize(
    "given", ["x" * 8000, "x" * 65, "a b", "id<script>", "line\tbreak", "../a;b"]
)
async def test_overlong_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    r = await client.post("/v1/search", json={}, headers={"X-Request-ID": given})
    assert r.status_code == 422
    rid = r.headers["x-request-id"]
    assert rid != given and SAFE_ID.fullmatch(rid), rid[:80]
    assert r.json()["error"]["request_id"] == rid


@pytest.mark.parametrize("given", ["abc-123", "req.7:2026_12", "x" * 64])
async def test_a_safe_request_id_is_kept(client: httpx.AsyncClient, given: str) -> None:
    r = await client.post("/v1/search", json={}, headers={"X-Request-ID": given})
    assert r.headers["x-request-id"] == given
    assert r.json()["error"]["request_id"] == given


async def test_upload_error_never_names_a_server_path(client: httpx.AsyncClient) -> None:
    noise = os.urandom(4096)
    r = await client.post(
        "/v1/collections/default/documents",
        files=[("files", ("random.docx", noise, "application/octet-stream"))],
    )
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "random.docx: not a valid .docx file" in message, message
    assert tempfile.gettempdir() not in message and "ragserve-upload-" not in message, message


async def test_a_failed_file_among_good_ones_is_named_by_its_upload_name(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/collections/default/documents",
        files=[
            ("files", ("notes.md", b"# Notes\n\nThe kettle boils at ninety degrees.", "text/md")),
            ("files", ("broken.docx", b"PK\x03\x04 not really a zip", "application/zip")),
            ("files", ("empty.txt", b"", "text/plain")),
        ],
    )
    assert r.status_code == 201, r.text
    failed = {f["source"]: f["reason"] for f in r.json()["failed"]}
    assert set(failed) == {"broken.docx", "empty.txt"}
    assert "not a valid .docx file" in failed["broken.docx"]
    for reason in failed.values():
        assert tempfile.gettempdir() not in reason and "ragserve-upload-" not in reason, reason


SAMPLE_SOURCES = {"coffee-brewing.txt", "ragserve-guide.md", "solar-system.html"}


def _no_server_path(items: list[dict[str, object]]) -> None:
    assert items
    for item in items:
        assert not str(item["source"]).startswith("/"), item["source"]
        assert str(item["source"]) in SAMPLE_SOURCES, item["source"]
        assert "path" not in item, item
        assert "groups" not in item, item  # a document's access list is no client's business


async def test_search_never_returns_a_server_path(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The samples are ingested with the real job from their folder: every source a client
    sees is a file's name relative to it, and the stored server path never goes out."""
    r = await client.post("/v1/search", json={"query": "planets coffee ragserve", "k": 10})
    assert r.status_code == 200, r.text
    _no_server_path(r.json()["hits"])
    listed = await client.get("/v1/collections/default/documents")
    assert listed.status_code == 200, listed.text
    docs = listed.json()
    docs = docs["documents"] if isinstance(docs, dict) else docs
    assert {d["source"] for d in docs} == SAMPLE_SOURCES
    services.set_generator(ScriptedGenerator())
    for route in ("/v1/ask", "/v1/ask/stream"):
        r = await client.post(route, json={"question": "How hot is Venus?", "k": 5})
        assert r.status_code == 200, r.text
        body = r.json() if route == "/v1/ask" else parse_events(r.text)[0].data
        _no_server_path(body["sources"])


@pytest.mark.parametrize("key", ["path", "path.x", "groups", "groups.x"])
async def test_the_server_path_is_no_filter_field(client: httpx.AsyncClient, key: str) -> None:
    body = {"query": "coffee", "filters": {key: "/"}}
    r = await client.post("/v1/search", json=body)
    assert r.status_code == 422, r.text
    assert "not a filter field" in r.text
