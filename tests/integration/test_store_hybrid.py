"""Hybrid fusion, MMR and dropping a collection: the same results from both adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pipelines.access import FULL_ACCESS
from pipelines.ports import VectorStore
from pipelines.ranking import HybridParams
from pipelines.types import Hit
from tests.support.seeds import CONTRACT_BM25, contract_store, seed_contract


@asynccontextmanager
async def _seeded(
    kind: str, root: Path, hybrid: HybridParams | None = None
) -> AsyncIterator[VectorStore]:
    store = contract_store(kind, root, hybrid=hybrid)
    try:
        await seed_contract(store)
        yield store
    finally:
        await store.close()


def _ranked(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.chunk_id, round(h.score, 5)) for h in hits]


@pytest.mark.parametrize("fusion", ["convex", "dbsf", "rrf"])
async def test_both_adapters_fuse_hybrid_results_identically(tmp_path: Path, fusion: str) -> None:
    params = HybridParams(fusion=fusion, dense_weight=0.6)
    results = []
    for kind in ("edge", "server"):
        async with _seeded(kind, tmp_path, params) as store:
            hits = await store.search(
                "c",
                dense=[0.5, 0.4, 0.0, 0.1],  # no tied dense scores: RRF ranks them
                sparse=CONTRACT_BM25.encode_query("apple steam engines"),
                k=4,
                mode="hybrid",
                access=FULL_ACCESS,
            )
            results.append(_ranked(hits))
            assert all(h.payload["text"] for h in hits)

            async def later() -> list[float]:  # the service passes the embedding like this
                return [0.5, 0.4, 0.0, 0.1]

            deferred = await store.search(
                "c",
                dense=later,
                sparse=CONTRACT_BM25.encode_query("apple steam engines"),
                k=4,
                mode="hybrid",
                access=FULL_ACCESS,
            )
            assert _ranked(deferred) == _ranked(hits)
    assert results[0] == results[1]
    assert len(results[0]) == 4


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_hybrid_applies_filters_inside_both_candidate_queries(
    tmp_path: Path, kind: str
) -> None:
    async with _seeded(kind, tmp_path) as store:
        hits = await store.search(
            "c",
            dense=[1.0, 0.0, 0.0, 0.0],
            sparse=CONTRACT_BM25.encode_query("apples"),
            k=5,
            mode="hybrid",
            filters={"source": ["/src/b.md", "/src/c.md"]},
            access=FULL_ACCESS,
        )
        assert {h.payload["doc_id"] for h in hits} == {"d2", "d3"}


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_hybrid_with_no_known_query_term_falls_back_to_dense(
    tmp_path: Path, kind: str
) -> None:
    async with _seeded(kind, tmp_path) as store:
        hits = await store.search(
            "c",
            dense=[0.0, 0.0, 1.0, 0.0],
            sparse=CONTRACT_BM25.encode_query("the of and"),  # stopwords only: no sparse query
            k=1,
            mode="hybrid",
            access=FULL_ACCESS,
        )
        assert hits[0].payload["doc_id"] == "d3"


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_mmr_skips_a_near_copy_of_the_best_hit(tmp_path: Path, kind: str) -> None:
    async with (
        _seeded(kind, tmp_path / "plain") as plain,
        _seeded(kind, tmp_path / "mmr", HybridParams(mmr_diversity=0.5)) as diverse,
    ):
        q = [1.0, 0.0, 0.3, 0.0]  # d1's two chunks first, then d3
        top = await plain.search("c", dense=q, sparse=None, k=2, mode="dense", access=FULL_ACCESS)
        assert [h.payload["doc_id"] for h in top] == ["d1", "d1"]
        mixed = await diverse.search(
            "c", dense=q, sparse=None, k=2, mode="dense", access=FULL_ACCESS
        )
        assert mixed[0].chunk_id == top[0].chunk_id
        assert mixed[1].payload["doc_id"] == "d3"


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_drop_collection_removes_it_and_tolerates_a_missing_one(
    tmp_path: Path, kind: str
) -> None:
    async with _seeded(kind, tmp_path) as store:
        await store.drop_collection("c")
        assert await store.list_collections() == []
        await store.drop_collection("c")
        await store.ensure_collection("c", create=True)
        assert (await store.stats("c", access=FULL_ACCESS)).chunks == 0
