"""Issue 14, finding 7: what a client sees never names a server path, and the request id it
gets back is a bounded, safe one."""

from __future__ import annotations

import os
import re
import tempfile

import httpx
import pytest

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
