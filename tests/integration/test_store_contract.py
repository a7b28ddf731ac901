"""The same contract on both adapters: Qdrant Edge, and qdrant-client (local mode) for servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import CollectionNotFound, InvalidInput, SchemaMismatch
from pipelines.identity import chunk_point_id
from pipelines.ports import VectorStore
from pipelines.types import Range
from tests.support.seeds import CONTRACT_BM25, contract_point, contract_store, seed_contract


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = contract_store(request.param, tmp_path)
    yield s
    await s.close()


async def test_unknown_collection_is_not_found(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        await store.ensure_collection("missing", create=False)
    with pytest.raises(CollectionNotFound):
        await store.search("missing", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense")


async def test_bad_collection_name_is_invalid_input(store: VectorStore) -> None:
    with pytest.raises(InvalidInput, match="invalid collection name"):
        await store.ensure_collection("../etc", create=True)


async def test_collection_name_with_trailing_newline_is_invalid_input(store: VectorStore) -> None:
    with pytest.raises(InvalidInput, match="invalid collection name"):
        await store.ensure_collection("default\n", create=True)
    with pytest.raises(InvalidInput, match="invalid collection name"):
        await store.upsert("c\n", [contract_point("d1", 0, 1, [1, 0, 0, 0], "apples")])
    assert await store.list_collections() == []


@pytest.mark.parametrize(
    "filters",
    [
        {"": "x"},
        {"$where": "x"},
        {"a b": "x"},
        {"a..b": "x"},
        {"a[": "x"},
        {"page": 10**30},
        {"page": -(2**63) - 1},
        {"page": [1.5, 2.5]},
        {"page": ["x", 1, True]},
        {"page": [True, False]},
        {"page": []},
        {"page": float("nan")},
        {"page": Range(gte=float("inf"))},
        {"page": Range()},
    ],
    ids=repr,
)
async def test_filter_the_engine_cannot_match_is_invalid_input_naming_the_field(
    store: VectorStore, filters: dict[str, Any]
) -> None:
    await seed_contract(store)
    (key,) = filters
    with pytest.raises(InvalidInput, match=f"^filters\\.{re.escape(key)}: a filter"):
        await store.search("c", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense", filters=filters)
    with pytest.raises(InvalidInput, match=f"^filters\\.{re.escape(key)}: "):
        await store.count("c", filters)


async def test_filters_within_the_rules_match_on_both_backends(store: VectorStore) -> None:
    await seed_contract(store)
    assert await store.count("c", {"page": [1, 2]}) == 2
    assert await store.count("c", {"page": 2.0}) == 1
    assert await store.count("c", {"page": Range(gte=-(2**63), lt=2)}) == 1
    assert await store.count("c", {"doc_id": ["d2", "d3"], "chunk_index": 0}) == 2
    assert await store.count("c", {"meta.lang": "en"}) == 0


async def test_dense_search_ranks_by_cosine(store: VectorStore) -> None:
    await seed_contract(store)
    hits = await store.search("c", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense")
    assert [h.payload["doc_id"] for h in hits][:2] == ["d1", "d1"]
    assert hits[0].chunk_id == chunk_point_id("d1", 0)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


async def test_sparse_search_matches_terms(store: VectorStore) -> None:
    await seed_contract(store)
    hits = await store.search(
        "c",
        dense=None,
        sparse=CONTRACT_BM25.encode_query("steam engine history"),
        k=2,
        mode="sparse",
    )
    assert hits[0].payload["doc_id"] == "d2"


async def test_hybrid_fuses_both(store: VectorStore) -> None:
    await seed_contract(store)
    hits = await store.search(
        "c", dense=[0, 0, 1, 0], sparse=CONTRACT_BM25.encode_query("quantum"), k=4, mode="hybrid"
    )
    assert hits[0].payload["doc_id"] == "d3"


async def test_filters_on_source_doc_and_range(store: VectorStore) -> None:
    await seed_contract(store)
    q = [1.0, 0.0, 0.0, 0.0]
    by_source = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"source": "/src/b.md"}
    )
    assert {h.payload["doc_id"] for h in by_source} == {"d2"}
    by_docs = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"doc_id": ["d2", "d3"]}
    )
    assert {h.payload["doc_id"] for h in by_docs} == {"d2", "d3"}
    by_page = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"page": Range(gte=2)}
    )
    assert [h.payload["chunk_index"] for h in by_page] == [1]


async def test_document_states_and_stale_chunk_removal(store: VectorStore) -> None:
    await seed_contract(store)
    states = await store.document_states("c")
    assert states["d1"].is_complete("h1")
    assert states["d1"].chunks == 2
    # d1 changes and shrinks to one chunk: the new chunk 0 overwrites, chunk 1 is stale.
    await store.upsert("c", [contract_point("d1", 0, 1, [1, 0, 0, 0], "apples only", h="h2")])
    assert not (await store.document_states("c"))["d1"].is_complete("h2")
    await store.delete_stale_chunks("c", "d1", "h2")
    state = (await store.document_states("c"))["d1"]
    assert state.is_complete("h2")
    assert state.chunks == 1


async def test_document_states_of_matching_chunks_only(store: VectorStore) -> None:
    await seed_contract(store)
    by_source = await store.document_states("c", {"source": ["/src/b.md", "/src/c.md"]})
    assert sorted(by_source) == ["d2", "d3"]
    firsts = await store.document_states("c", {"chunk_index": 0})
    assert sorted(firsts) == ["d1", "d2", "d3"]
    assert (firsts["d1"].chunks, firsts["d1"].expected_chunks) == (1, 2)
    assert await store.document_states("c", {"source": "/nowhere"}) == {}


async def test_delete_documents_and_stats(store: VectorStore) -> None:
    await seed_contract(store)
    stats = await store.stats("c")
    assert (stats.documents, stats.chunks) == (3, 4)
    await store.delete_documents("c", ["d1", "d3"])
    stats = await store.stats("c")
    assert (stats.documents, stats.chunks) == (1, 1)
    assert await store.list_collections() == ["c"]


async def test_count_with_and_without_filters(store: VectorStore) -> None:
    await seed_contract(store)
    assert await store.count("c") == 4
    assert await store.count("c", {"doc_id": "d1"}) == 2
    assert await store.count("c", {"doc_id": ["d2", "d3"], "page": Range(gte=1)}) == 0
    assert await store.count("c", {"doc_id": "nope"}) == 0
    with pytest.raises(CollectionNotFound):
        await store.count("missing")


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_reopening_with_another_vector_size_is_refused(kind: str, tmp_path: Path) -> None:
    first = contract_store(kind, tmp_path)
    await first.ensure_collection("c", create=True)
    await first.close()
    second = contract_store(kind, tmp_path, dim=8)
    try:
        with pytest.raises(SchemaMismatch, match=r"4-dim.*--collection"):
            await second.ensure_collection("c", create=False)
    finally:
        await second.close()
