"""Per-collection statistics: documents, chunks, size on disk and the last ingest, on both
store backends (Qdrant Edge, qdrant-client's local mode for a server), kept across restarts,
shown only as far as the caller reads; then through GET /v1/collections and `rag stats`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.main import create_app
from app.services import Services
from pipelines.access import FULL_ACCESS, Access
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.ports import VectorStore
from pipelines.settings import Settings
from tests.support.seeds import contract_point, contract_store, ingest_samples, seed_acl
from tests.support.servers import in_process_client


@pytest.fixture(params=["edge", "server"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = contract_store(kind, tmp_path)
    yield s
    await s.close()


async def _write(store: VectorStore, doc: str) -> None:
    """One document written and committed, as an ingest run ends."""
    await store.upsert("c", [contract_point(doc, 0, 1, [1, 0, 0, 0], f"text of {doc}")])
    await store.commit("c")


async def test_a_collection_never_written_has_no_last_ingest(store: VectorStore) -> None:
    await store.ensure_collection("c", create=True)
    await store.commit("c")  # a run that wrote nothing (every file failed) records nothing
    stats = await store.stats("c", access=FULL_ACCESS)
    assert (stats.documents, stats.chunks, stats.last_ingest_at) == (0, 0, None)


async def test_last_ingest_is_set_by_a_write_and_moves_forward_with_the_next(
    store: VectorStore,
) -> None:
    before = datetime.now(UTC)
    await _write(store, "d1")
    first = await store.stats("c", access=FULL_ACCESS)
    assert (first.documents, first.chunks) == (1, 1)
    assert first.last_ingest_at is not None
    assert before <= first.last_ingest_at <= datetime.now(UTC)
    assert first.last_ingest_at.utcoffset() is not None  # an aware UTC time, never naive
    await _write(store, "d2")
    second = await store.stats("c", access=FULL_ACCESS)
    assert second.last_ingest_at is not None and second.last_ingest_at > first.last_ingest_at
    await store.delete_documents("c", ["d1"])  # a deletion changes the collection too
    await store.commit("c")
    third = await store.stats("c", access=FULL_ACCESS)
    assert third.last_ingest_at is not None and third.last_ingest_at > second.last_ingest_at
    assert (third.documents, third.chunks) == (1, 1)


async def test_size_on_disk_is_the_shard_folder_on_edge_and_unknown_on_a_server(
    store: VectorStore, kind: str
) -> None:
    await _write(store, "d1")
    size = (await store.stats("c", access=FULL_ACCESS)).size_bytes
    if kind == "edge":
        assert size is not None and size > 0
    else:
        assert size is None  # the collection API reports no bytes


async def test_last_ingest_survives_a_restart(kind: str, tmp_path: Path) -> None:
    store = contract_store(kind, tmp_path)
    try:
        await _write(store, "d1")
        written = (await store.stats("c", access=FULL_ACCESS)).last_ingest_at
    finally:
        await store.close()
    reopened = contract_store(kind, tmp_path)
    try:
        stats = await reopened.stats("c", access=FULL_ACCESS)
        assert written is not None and stats.last_ingest_at == written
        assert stats.documents == 1
    finally:
        await reopened.close()


async def test_a_write_not_yet_committed_shows_and_is_recorded_when_the_store_closes(
    kind: str, tmp_path: Path
) -> None:
    store = contract_store(kind, tmp_path)
    try:
        await store.upsert("c", [contract_point("d1", 0, 1, [1, 0, 0, 0], "text")])
        assert (await store.stats("c", access=FULL_ACCESS)).last_ingest_at is not None
    finally:
        await store.close()
    reopened = contract_store(kind, tmp_path)
    try:
        assert (await reopened.stats("c", access=FULL_ACCESS)).last_ingest_at is not None
    finally:
        await reopened.close()


async def test_size_and_last_ingest_only_for_a_caller_who_reads_the_whole_collection(
    store: VectorStore, kind: str
) -> None:
    await seed_acl(store)  # public documents and hr / finance ones
    whole = await store.stats("c", access=FULL_ACCESS)
    assert whole.last_ingest_at is not None
    hr = await store.stats("c", access=Access(groups=frozenset({"hr"})))
    assert hr.documents < whole.documents
    # What it cannot read must not show through the collection's size or its last change.
    assert (hr.size_bytes, hr.last_ingest_at) == (None, None)
    # Where a group-limited key reads every document there is, it sees them as they are.
    await store.upsert("p", [contract_point("d1", 0, 1, [1, 0, 0, 0], "public text")])
    await store.commit("p")
    public_key = Access(groups=frozenset())
    everything = await store.stats("p", access=FULL_ACCESS)
    assert await store.stats("p", access=public_key) == everything
    assert everything.last_ingest_at is not None
    assert (everything.size_bytes is not None) == (kind == "edge")


# -- through the service and the CLI, over the real ingest job and model -------------------


@pytest.mark.slow
async def test_the_collections_listing_shows_size_and_a_last_ingest_an_upload_moves(
    settings: Settings, services: Services
) -> None:
    async with in_process_client(create_app(settings, services=services)) as client:
        before = (await client.get("/v1/collections")).json()["collections"]
        assert [(c["name"], c["documents"], c["chunks"]) for c in before] == [("default", 3, 4)]
        assert before[0]["size_bytes"] > 0
        first = datetime.fromisoformat(before[0]["last_ingest_at"])
        assert first.utcoffset() is not None
        files = {"files": ("late.md", b"# Late\n\nA note written after the others.")}
        r = await client.post("/v1/collections/default/documents", files=files)
        assert r.status_code == 201, r.text
        (after,) = (await client.get("/v1/collections")).json()["collections"]
        assert (after["documents"], after["chunks"]) == (4, 5)
        assert datetime.fromisoformat(after["last_ingest_at"]) > first
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
        described = schema["CollectionOut"]["properties"]
        assert "Qdrant server" in described["size_bytes"]["description"]


def _rag(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
async def test_rag_stats_prints_a_table_and_json_with_size_and_last_ingest(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    # Closed before the CLI runs: one process at a time holds a shard.
    async with open_core(settings, embedder=embedder) as core:
        await ingest_samples(core)
        await core.store.ensure_collection("empty", create=True)
    listed = _rag(["stats", "--json"], settings.data_dir)
    assert listed.returncode == 0, listed.stderr
    rows = {c["name"]: c for c in json.loads(listed.stdout)["collections"]}
    assert (rows["default"]["documents"], rows["default"]["chunks"]) == (3, 4)
    assert rows["default"]["size_bytes"] > 0
    assert datetime.fromisoformat(rows["default"]["last_ingest_at"]) <= datetime.now(UTC)
    assert (rows["empty"]["documents"], rows["empty"]["last_ingest_at"]) == (0, None)
    table = _rag(["stats"], settings.data_dir)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(line for line in lines if "collection" in line)
    assert header.split() == ["collection", "documents", "chunks", "size", "last", "ingest"]
    default = next(line for line in lines if line.lstrip().startswith("default"))
    stamp = datetime.fromisoformat(rows["default"]["last_ingest_at"]).strftime("%Y-%m-%d %H:%M")
    assert default.split()[1:3] == ["3", "4"]
    assert default.split()[4] in ("KiB", "MiB") and stamp in default
    empty = next(line for line in lines if line.lstrip().startswith("empty"))
    assert empty.split()[1:3] == ["0", "0"] and empty.rstrip().endswith("never")
    assert "times in UTC" in table.stdout
