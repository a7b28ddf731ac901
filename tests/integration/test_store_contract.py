"""The same contract on both adapters: Qdrant Edge, and qdrant-client (local mode) for servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.access import FULL_ACCESS, GROUPS_FIELD, Access
from pipelines.errors import CollectionNotFound, Forbidden, InvalidInput, SchemaMismatch
from pipelines.identity import chunk_point_id
from pipelines.ports import VectorStore
from pipelines.ranking import HybridParams
from pipelines.types import Range, SearchMode
from tests.support.seeds import (
    ACL_DOCS,
    CONTRACT_BM25,
    LEGACY_DOC,
    contract_point,
    contract_store,
    seed_acl,
    seed_contract,
)


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = contract_store(request.param, tmp_path)
    yield s
    await s.close()


async def test_unknown_collection_is_not_found(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        await store.ensure_collection("missing", create=False)
    with pytest.raises(CollectionNotFound):
        await store.search(
            "missing", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense", access=FULL_ACCESS
        )


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
        await store.search(
            "c",
            dense=[1, 0, 0, 0],
            sparse=None,
            k=3,
            mode="dense",
            filters=filters,
            access=FULL_ACCESS,
        )
    with pytest.raises(InvalidInput, match=f"^filters\\.{re.escape(key)}: "):
        await store.count("c", filters, access=FULL_ACCESS)


async def test_filters_within_the_rules_match_on_both_backends(store: VectorStore) -> None:
    await seed_contract(store)
    assert await store.count("c", {"page": [1, 2]}, access=FULL_ACCESS) == 2
    assert await store.count("c", {"page": 2.0}, access=FULL_ACCESS) == 1
    assert await store.count("c", {"page": Range(gte=-(2**63), lt=2)}, access=FULL_ACCESS) == 1
    assert (
        await store.count("c", {"doc_id": ["d2", "d3"], "chunk_index": 0}, access=FULL_ACCESS) == 2
    )
    assert await store.count("c", {"meta.lang": "en"}, access=FULL_ACCESS) == 0


async def test_dense_search_ranks_by_cosine(store: VectorStore) -> None:
    await seed_contract(store)
    hits = await store.search(
        "c", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense", access=FULL_ACCESS
    )
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
        access=FULL_ACCESS,
    )
    assert hits[0].payload["doc_id"] == "d2"


async def test_hybrid_fuses_both(store: VectorStore) -> None:
    await seed_contract(store)
    hits = await store.search(
        "c",
        dense=[0, 0, 1, 0],
        sparse=CONTRACT_BM25.encode_query("quantum"),
        k=4,
        mode="hybrid",
        access=FULL_ACCESS,
    )
    assert hits[0].payload["doc_id"] == "d3"


async def test_filters_on_source_doc_and_range(store: VectorStore) -> None:
    await seed_contract(store)
    q = [1.0, 0.0, 0.0, 0.0]
    by_source = await store.search(
        "c",
        dense=q,
        sparse=None,
        k=5,
        mode="dense",
        filters={"source": "/src/b.md"},
        access=FULL_ACCESS,
    )
    assert {h.payload["doc_id"] for h in by_source} == {"d2"}
    by_docs = await store.search(
        "c",
        dense=q,
        sparse=None,
        k=5,
        mode="dense",
        filters={"doc_id": ["d2", "d3"]},
        access=FULL_ACCESS,
    )
    assert {h.payload["doc_id"] for h in by_docs} == {"d2", "d3"}
    by_page = await store.search(
        "c",
        dense=q,
        sparse=None,
        k=5,
        mode="dense",
        filters={"page": Range(gte=2)},
        access=FULL_ACCESS,
    )
    assert [h.payload["chunk_index"] for h in by_page] == [1]


async def test_document_states_and_stale_chunk_removal(store: VectorStore) -> None:
    await seed_contract(store)
    states = await store.document_states("c", access=FULL_ACCESS)
    assert states["d1"].is_complete("h1")
    assert states["d1"].chunks == 2
    # d1 changes and shrinks to one chunk: the new chunk 0 overwrites, chunk 1 is stale.
    await store.upsert("c", [contract_point("d1", 0, 1, [1, 0, 0, 0], "apples only", h="h2")])
    assert not (await store.document_states("c", access=FULL_ACCESS))["d1"].is_complete("h2")
    await store.delete_stale_chunks("c", "d1", "h2")
    state = (await store.document_states("c", access=FULL_ACCESS))["d1"]
    assert state.is_complete("h2")
    assert state.chunks == 1


async def test_document_states_of_matching_chunks_only(store: VectorStore) -> None:
    await seed_contract(store)
    by_source = await store.document_states(
        "c", {"source": ["/src/b.md", "/src/c.md"]}, access=FULL_ACCESS
    )
    assert sorted(by_source) == ["d2", "d3"]
    firsts = await store.document_states("c", {"chunk_index": 0}, access=FULL_ACCESS)
    assert sorted(firsts) == ["d1", "d2", "d3"]
    assert (firsts["d1"].chunks, firsts["d1"].expected_chunks) == (1, 2)
    assert await store.document_states("c", {"source": "/nowhere"}, access=FULL_ACCESS) == {}


async def test_delete_documents_and_stats(store: VectorStore) -> None:
    await seed_contract(store)
    stats = await store.stats("c", access=FULL_ACCESS)
    assert (stats.documents, stats.chunks) == (3, 4)
    await store.delete_documents("c", ["d1", "d3"])
    stats = await store.stats("c", access=FULL_ACCESS)
    assert (stats.documents, stats.chunks) == (1, 1)
    assert await store.list_collections() == ["c"]


async def test_count_with_and_without_filters(store: VectorStore) -> None:
    await seed_contract(store)
    assert await store.count("c", access=FULL_ACCESS) == 4
    assert await store.count("c", {"doc_id": "d1"}, access=FULL_ACCESS) == 2
    assert (
        await store.count("c", {"doc_id": ["d2", "d3"], "page": Range(gte=1)}, access=FULL_ACCESS)
        == 0
    )
    assert await store.count("c", {"doc_id": "nope"}, access=FULL_ACCESS) == 0
    with pytest.raises(CollectionNotFound):
        await store.count("missing", access=FULL_ACCESS)


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


# -- document access lists: the store selects what a caller may read, inside the query ------

HR = Access(groups=frozenset({"hr"}))
NO_GROUPS = Access(groups=frozenset())
# What each caller may read of seed_acl's documents.
VISIBLE = {
    "hr": {"public", LEGACY_DOC, "hr", "hr-finance"},
    "none": {"public", LEGACY_DOC},
    "all": {*ACL_DOCS, LEGACY_DOC},
}
CALLERS = {"hr": HR, "none": NO_GROUPS, "all": Access()}


async def _search_docs(
    store: VectorStore, access: Access, mode: SearchMode, filters: Any = None
) -> set[str]:
    hits = await store.search(
        "c",
        dense=[1.0, 0.2, 0.1, 0.0] if mode != "sparse" else None,
        sparse=CONTRACT_BM25.encode_query("payroll report") if mode != "dense" else None,
        k=20,
        mode=mode,
        access=access,
        filters=filters,
    )
    return {h.doc_id for h in hits}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
async def test_search_returns_public_chunks_and_those_sharing_a_group_only(
    store: VectorStore, caller: str, mode: SearchMode
) -> None:
    await seed_acl(store)
    assert await _search_docs(store, CALLERS[caller], mode) == VISIBLE[caller]
    # With a filter of the caller's own, the access condition still holds.
    found = await _search_docs(store, CALLERS[caller], mode, {"chunk_index": 1})
    assert found == VISIBLE[caller]


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_diversified_hybrid_search_selects_by_access_too(kind: str, tmp_path: Path) -> None:
    store = contract_store(kind, tmp_path, hybrid=HybridParams(mmr_diversity=0.5))
    try:
        await seed_acl(store)
        for mode in ("dense", "hybrid"):
            assert await _search_docs(store, HR, mode) == VISIBLE["hr"]
    finally:
        await store.close()


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_counts_states_and_stats_see_only_readable_documents(
    store: VectorStore, caller: str
) -> None:
    await seed_acl(store)
    access, visible = CALLERS[caller], VISIBLE[caller]
    assert await store.count("c", access=access) == 2 * len(visible)
    assert await store.count("c", {"chunk_index": 0}, access=access) == len(visible)
    assert set(await store.document_states("c", access=access)) == visible
    firsts = await store.document_states("c", {"chunk_index": 0}, access=access)
    assert set(firsts) == visible
    stats = await store.stats("c", access=access)
    assert (stats.documents, stats.chunks) == (len(visible), 2 * len(visible))


async def test_document_states_carry_each_documents_groups(store: VectorStore) -> None:
    await seed_acl(store)
    states = await store.document_states("c", access=FULL_ACCESS)
    assert {d: st.groups for d, st in states.items()} == {**ACL_DOCS, LEGACY_DOC: ()}


async def test_a_collection_out_of_scope_is_forbidden_before_any_lookup(
    store: VectorStore,
) -> None:
    await seed_acl(store)
    elsewhere = Access(collections=frozenset({"other"}))
    # "missing" does not exist: Forbidden, not CollectionNotFound, means nothing was looked up.
    for name in ("c", "missing"):
        with pytest.raises(Forbidden, match=f"'{name}'"):
            await store.search(
                name, dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense", access=elsewhere
            )
        with pytest.raises(Forbidden):
            await store.count(name, {"$bad": 1}, access=elsewhere)
        with pytest.raises(Forbidden):
            await store.document_states(name, access=elsewhere)
        with pytest.raises(Forbidden):
            await store.stats(name, access=elsewhere)
    assert await store.list_collections() == ["c"]  # names are listed; the caller picks
    assert elsewhere.visible(await store.list_collections()) == []


@pytest.mark.parametrize("key", [GROUPS_FIELD, f"{GROUPS_FIELD}.x"])
async def test_a_filter_naming_the_groups_is_refused(store: VectorStore, key: str) -> None:
    await seed_acl(store)
    message = f"^filters\\.{re.escape(key)}: '{re.escape(key)}' is not a filter field"
    with pytest.raises(InvalidInput, match=message):
        await store.search(
            "c", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense", access=HR,
            filters={key: "finance"},
        )  # fmt: skip
    with pytest.raises(InvalidInput, match=message):
        await store.count("c", {key: ["finance"]}, access=NO_GROUPS)


async def test_setting_a_documents_groups_changes_every_chunk_at_once(
    store: VectorStore,
) -> None:
    await seed_acl(store)
    await store.set_document_groups("c", "hr", ["finance"])
    assert "hr" not in await _search_docs(store, HR, "dense")
    assert await store.count("c", {"doc_id": "hr"}, access=HR) == 0
    finance = Access(groups=frozenset({"finance"}))
    assert await store.count("c", {"doc_id": "hr"}, access=finance) == 2
    await store.set_document_groups("c", "finance", [])  # now public
    assert await store.count("c", {"doc_id": "finance"}, access=NO_GROUPS) == 2
    states = await store.document_states("c", access=FULL_ACCESS)
    assert (states["hr"].groups, states["finance"].groups) == (("finance",), ())


async def test_an_edge_shard_made_before_the_groups_index_gets_it_when_opened(
    tmp_path: Path,
) -> None:
    import qdrant_edge as qe

    from pipelines.stores.edge import EdgeStore

    first = contract_store("edge", tmp_path)
    assert isinstance(first, EdgeStore)
    await seed_acl(first)
    first.shards.shard("c").update(qe.UpdateOperation.delete_field_index(GROUPS_FIELD))
    assert GROUPS_FIELD not in first.shards.shard("c").info().payload_schema
    await first.close()
    second = contract_store("edge", tmp_path)
    assert isinstance(second, EdgeStore)
    try:
        assert await _search_docs(second, HR, "dense") == VISIBLE["hr"]
        assert GROUPS_FIELD in second.shards.shard("c").info().payload_schema
    finally:
        await second.close()
