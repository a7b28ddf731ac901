"""The relevance floor's parts: the calibration mapping, the floor, and the raw side scores
the search plan carries on every hit (against a candidate source with fixed lists)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipelines.ranking import Calibration, HybridParams, Query, Scored, above_floor, ranked_search
from pipelines.retrieval import calibrations_of
from pipelines.settings import RetrievalSettings
from pipelines.types import Filters, Hit, SparseVector

TERMS = SparseVector(indices=[1], values=[1.0])


def test_probability_is_the_logistic_of_the_weighted_scores() -> None:
    cal = Calibration(-4.0, dense=10.0, sparse=0.5)
    z = -4.0 + 10.0 * 0.3 + 0.5 * 2.0
    assert math.isclose(cal.probability(0.3, 2.0), 1 / (1 + math.exp(-z)))
    assert Calibration(0.0).probability(0.9, 9.0) == 0.5  # no weights: no evidence


def test_probability_grows_with_each_score_and_stays_in_0_1() -> None:
    cal = Calibration(-4.0, dense=10.0, sparse=0.5)
    cosines = [cal.probability(c, 0.0) for c in (-1.0, 0.0, 0.2, 0.5, 0.8, 1.0)]
    assert cosines == sorted(cosines) and len(set(cosines)) == len(cosines)
    assert cal.probability(0.5, 1.0) < cal.probability(0.5, 3.0)
    assert all(0.0 <= p <= 1.0 for p in cosines)
    assert Calibration(-5000.0, dense=1.0).probability(1.0, None) == 0.0  # no overflow
    assert Calibration(5000.0).probability(None, None) == 1.0


def test_a_score_the_search_did_not_compute_counts_as_zero() -> None:
    cal = Calibration(-1.0, dense=2.0, sparse=1.0)
    assert cal.probability(0.4, None) == cal.probability(0.4, 0.0)
    assert cal.probability(None, None) == cal.probability(0.0, 0.0)


def test_settings_give_each_mode_its_calibration_and_the_reranker_its_own() -> None:
    settings = RetrievalSettings(
        calibration_dense=(-3.0, 9.0, 0.0),
        calibration_sparse=(-2.0, 0.0, 0.25),
        calibration_hybrid=(-6.0, 8.0, 0.1),
        calibration_rerank=(1.0, 0.5),
    )
    cals = calibrations_of(settings)
    assert cals["dense"] == Calibration(-3.0, dense=9.0)
    assert cals["sparse"] == Calibration(-2.0, sparse=0.25)
    assert cals["hybrid"] == Calibration(-6.0, dense=8.0, sparse=0.1)
    rerank = Calibration.of_reranker(settings.calibration_rerank)
    assert math.isclose(rerank.probability(None, None, 2.0), 1 / (1 + math.exp(-2.0)))


def test_the_default_calibrations_keep_a_close_match_and_drop_an_unrelated_one() -> None:
    settings = RetrievalSettings()
    for mode, cal in calibrations_of(settings).items():
        close = cal.probability(0.7, 20.0 if mode != "dense" else None)
        unrelated = cal.probability(0.05, None)
        assert close >= settings.relevance_floor > unrelated, mode


def test_the_floor_drops_the_improbable_and_shows_the_probability() -> None:
    hits = [Hit(score=s, chunk_id=c, payload={}) for c, s in (("a", 1.0), ("b", 0.6), ("c", 0.0))]
    kept = above_floor(hits, [0.3, 0.01, 0.5], floor=0.2, by_relevance=False)
    assert [(h.chunk_id, h.score) for h in kept] == [("a", 0.3), ("c", 0.5)]
    assert above_floor(hits, [0.1, 0.1, 0.1], floor=0.2, by_relevance=False) == []


def test_the_floor_can_order_by_probability_keeping_ties_in_order() -> None:
    hits = [Hit(score=s, chunk_id=c, payload={}) for c, s in (("a", 1.0), ("b", 0.6), ("c", 0.0))]
    kept = above_floor(hits, [0.3, 0.01, 0.5], floor=0.2, by_relevance=True)
    assert [(h.chunk_id, h.score) for h in kept] == [("c", 0.5), ("a", 0.3)]
    everything = above_floor(hits, [0.3, 0.01, 0.3], floor=0.0, by_relevance=True)
    assert [(h.chunk_id, h.score) for h in everything] == [("a", 0.3), ("c", 0.3), ("b", 0.01)]


class Lists:
    """A CandidateSource with fixed candidate lists and vectors; `deleted` points have no
    record any more (deleted between the candidate search and the payload read)."""

    def __init__(
        self,
        dense: list[Scored],
        sparse: list[Scored],
        vectors: dict[str, list[float]],
        deleted: Sequence[str] = (),
    ) -> None:
        self.dense, self.sparse, self.vectors, self.deleted = dense, sparse, vectors, deleted

    def _side(self, query: Query) -> list[Scored]:
        return self.sparse if isinstance(query, SparseVector) else self.dense

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: Filters | None
    ) -> list[Hit]:
        return [Hit(score=s, chunk_id=p, payload={}) for p, s in self._side(query)[:limit]]

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: Filters | None
    ) -> list[Scored]:
        return self._side(query)[:limit]

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        return [
            Hit(score=s, chunk_id=p, payload={"text": p})
            for p, s in ranked
            if p not in self.deleted
        ]

    async def dense_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        return {pid: self.vectors[pid] for pid in ids if pid in self.vectors}


VECTORS = {"a": [1.0, 0.0], "b": [0.6, 0.8], "c": [0.0, 1.0], "d": [0.3, -0.4]}


async def _search(source: Lists, mode: Any, *, dense: bool = True, k: int = 3) -> list[Hit]:
    async def embed() -> list[float]:
        return [2.0, 0.0]  # normalized before the cosines are computed

    return await ranked_search(
        source,
        "c",
        dense=embed if dense else None,
        sparse=TERMS,
        k=k,
        mode=mode,
        filters=None,
        params=HybridParams(prefetch=3),
    )


async def test_plain_searches_carry_their_own_side_score() -> None:
    source = Lists([("a", 0.9), ("b", 0.6)], [("c", 7.0)], VECTORS)
    dense = await _search(source, "dense")
    assert [(h.chunk_id, h.dense_score, h.sparse_score) for h in dense] == [
        ("a", 0.9, None),
        ("b", 0.6, None),
    ]
    sparse = await _search(source, "sparse", dense=False)
    assert [(h.chunk_id, h.score, h.dense_score, h.sparse_score) for h in sparse] == [
        ("c", 7.0, None, 7.0)
    ]


async def test_hybrid_hits_carry_raw_scores_and_exact_cosines_for_dense_misses() -> None:
    # The dense list is full (prefetch 3): "d", missing from it, gets its exact cosine; "b",
    # missing from the short sparse list (every match listed), gets BM25 0.
    source = Lists([("a", 0.9), ("b", 0.6), ("c", 0.1)], [("d", 9.0), ("a", 2.0)], VECTORS)
    hits = await _search(source, "hybrid")
    sides = [(h.chunk_id, h.dense_score, h.sparse_score) for h in hits]
    assert [(c, round(d or 0.0, 6), s) for c, d, s in sides] == [
        ("a", 0.9, 2.0),
        ("d", 0.6, 9.0),
        ("b", 0.6, 0.0),
    ]
    # The fused score stays the hit's score (the ranking); the raw ones are beside it.
    assert [h.score for h in hits] == [0.5, 0.5, 0.5 * 0.625]


async def test_a_sparse_search_given_a_dense_query_computes_its_hits_cosines() -> None:
    source = Lists([], [("b", 4.0), ("c", 1.0)], VECTORS)
    hits = await _search(source, "sparse")
    assert [(h.chunk_id, h.score, h.sparse_score) for h in hits] == [
        ("b", 4.0, 4.0),
        ("c", 1.0, 1.0),
    ]
    assert [round(h.dense_score or 0.0, 6) for h in hits] == [0.6, 0.0]


async def test_a_point_deleted_before_its_payload_is_read_keeps_the_others_scores() -> None:
    source = Lists(
        [("a", 0.9), ("b", 0.6), ("c", 0.1)], [("a", 3.0), ("c", 2.0)], VECTORS, deleted=["a"]
    )
    hits = await _search(source, "hybrid")
    assert [(h.chunk_id, h.dense_score, h.sparse_score) for h in hits] == [
        ("b", 0.6, 0.0),
        ("c", 0.1, 2.0),
    ]


async def test_a_sparse_search_with_no_query_term_embeds_nothing() -> None:
    embedded: list[str] = []

    async def embed() -> list[float]:
        embedded.append("query")
        return [1.0, 0.0]

    hits = await ranked_search(
        Lists([], [("b", 4.0)], VECTORS),
        "c",
        dense=embed,
        sparse=SparseVector(indices=[], values=[]),
        k=3,
        mode="sparse",
        filters=None,
        params=HybridParams(),
    )
    assert hits == [] and embedded == []
