"""The search plan both adapters share (ranked_search), against a recording candidate source."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from pipelines.errors import InvalidInput
from pipelines.ranking import HybridParams, Query, Scored, fuse, ranked_search
from pipelines.types import Filters, Hit, SparseVector

DENSE_IDS: list[Scored] = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
SPARSE_IDS: list[Scored] = [("c", 7.0), ("d", 5.0), ("a", 1.0)]
QUERY_TERMS = SparseVector(indices=[1, 2], values=[1.0, 1.0])


class Recorder:
    """A CandidateSource with fixed candidate lists that logs what is asked of it, in order."""

    def __init__(self, sparse_delay: float = 0.0) -> None:
        self.events: list[str] = []
        self.sparse_delay = sparse_delay

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: Filters | None
    ) -> list[Hit]:
        side = "sparse" if isinstance(query, SparseVector) else "dense"
        self.events.append(f"{side} hits")
        scored = SPARSE_IDS if side == "sparse" else DENSE_IDS
        return [Hit(score=s, chunk_id=pid, payload={"text": pid}) for pid, s in scored[:limit]]

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: Filters | None
    ) -> list[Scored]:
        side = "sparse" if isinstance(query, SparseVector) else "dense"
        self.events.append(f"{side} search")
        if side == "sparse":
            try:
                await asyncio.sleep(self.sparse_delay)
            except asyncio.CancelledError:
                self.events.append("sparse cancelled")
                raise
            return SPARSE_IDS[:limit]
        return DENSE_IDS[:limit]

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        self.events.append("payloads")
        return [Hit(score=s, chunk_id=pid, payload={"text": f"text of {pid}"}) for pid, s in ranked]

    async def dense_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        return {pid: [1.0, 0.0] for pid in ids}


async def test_hybrid_starts_the_sparse_side_before_the_query_is_embedded() -> None:
    source = Recorder()

    async def embed() -> list[float]:
        source.events.append("embedding")
        await asyncio.sleep(0.01)
        source.events.append("embedded")
        return [1.0, 0.0]

    params = HybridParams(dense_weight=0.5)
    hits = await ranked_search(
        source, "c", dense=embed, sparse=QUERY_TERMS, k=2, mode="hybrid", filters=None,
        params=params,
    )  # fmt: skip
    assert source.events == ["embedding", "sparse search", "embedded", "dense search", "payloads"]
    expected = fuse(DENSE_IDS, SPARSE_IDS, params)[:2]
    assert [(h.chunk_id, h.score) for h in hits] == expected
    assert hits[0].payload == {"text": f"text of {expected[0][0]}"}


async def test_a_plain_query_returns_its_payloads_in_one_call() -> None:
    source = Recorder()

    async def embed() -> list[float]:
        return [1.0, 0.0]

    hits = await ranked_search(
        source, "c", dense=embed, sparse=QUERY_TERMS, k=2, mode="dense", filters=None,
        params=HybridParams(),
    )  # fmt: skip
    assert source.events == ["dense hits"]
    assert [h.chunk_id for h in hits] == ["a", "b"]


async def test_hybrid_without_known_query_terms_ranks_by_the_dense_side() -> None:
    source = Recorder()
    hits = await ranked_search(
        source, "c", dense=[1.0, 0.0], sparse=SparseVector([], []), k=2, mode="hybrid",
        filters=None, params=HybridParams(),
    )  # fmt: skip
    assert source.events == ["dense search", "payloads"]
    assert [(h.chunk_id, h.score) for h in hits] == DENSE_IDS[:2]


async def test_a_failed_embedding_cancels_the_sparse_side_and_keeps_its_error() -> None:
    source = Recorder(sparse_delay=10.0)

    async def embed() -> list[float]:
        await asyncio.sleep(0)
        raise InvalidInput("query too long")

    with pytest.raises(InvalidInput, match="query too long"):
        await ranked_search(
            source, "c", dense=embed, sparse=QUERY_TERMS, k=2, mode="hybrid", filters=None,
            params=HybridParams(),
        )  # fmt: skip
    await asyncio.sleep(0)  # let the cancellation land
    assert source.events == ["sparse search", "sparse cancelled"]
