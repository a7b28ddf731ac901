"""Ranking (pipelines/ranking.py): hybrid fusion, MMR, near-duplicate removal and rescoring
depth, against hand-computed rankings."""

from __future__ import annotations

import uuid

import pytest

from pipelines.ranking import HybridParams, dedupe_hits, fuse, mmr
from pipelines.types import Hit


def test_convex_fusion_min_max_normalizes_each_side_and_weights_them() -> None:
    dense = [("a", 1.0), ("b", 0.75), ("c", 0.5)]
    sparse = [("c", 12.0), ("d", 8.0), ("a", 4.0)]
    fused = dict(fuse(dense, sparse, HybridParams(fusion="convex", dense_weight=0.5)))
    # dense: a=1, b=0.5, c=0; sparse: c=1, d=0.5, a=0; a point missing from a side scores 0.
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.25})


def test_convex_fusion_ties_go_to_the_better_dense_rank() -> None:
    dense = [("a", 1.0), ("b", 0.75), ("c", 0.5)]
    sparse = [("c", 12.0), ("d", 8.0), ("a", 4.0)]
    ranked = [pid for pid, _ in fuse(dense, sparse, HybridParams(dense_weight=0.5))]
    assert ranked == ["a", "c", "b", "d"]


def test_dense_weight_moves_the_balance() -> None:
    dense = [("a", 0.9), ("b", 0.1)]
    sparse = [("b", 5.0), ("a", 1.0)]
    assert fuse(dense, sparse, HybridParams(dense_weight=0.8))[0][0] == "a"
    assert fuse(dense, sparse, HybridParams(dense_weight=0.2))[0][0] == "b"


def test_weighted_rrf_uses_ranks_not_scores() -> None:
    dense = [("a", 0.9), ("b", 0.8)]
    sparse = [("b", 30.0), ("c", 1.0)]
    fused = dict(fuse(dense, sparse, HybridParams(fusion="rrf", rrf_k=60, dense_weight=0.5)))
    assert fused["a"] == pytest.approx(0.5 / 61)
    assert fused["b"] == pytest.approx(0.5 / 62 + 0.5 / 61)
    assert fused["c"] == pytest.approx(0.5 / 62)


def test_dbsf_bounds_are_mean_plus_minus_three_deviations() -> None:
    dense = [("a", 3.0), ("b", 1.0)]  # mean 2, sd 1: bounds -1..5
    fused = dict(fuse(dense, [], HybridParams(fusion="dbsf", dense_weight=1.0)))
    assert fused == pytest.approx({"a": 4 / 6, "b": 2 / 6})


def test_one_candidate_or_equal_scores_normalize_to_one() -> None:
    fused = fuse([("a", 0.3)], [("a", 2.0)], HybridParams(dense_weight=0.5))
    assert fused == [("a", pytest.approx(1.0))]


def test_limit_keeps_the_head_and_uuid_ids_tie_break_like_their_strings() -> None:
    # Edge returns UUID objects, qdrant-client strings: exact ties must order the same.
    ids = [uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128)) for i in range(1, 41)]
    dense = [(pid, 0.5) for pid in ids[:20]]  # every dense score equal: min-max gives 1.0
    sparse = [(pid, float(i % 3)) for i, pid in enumerate(ids[10:])]
    params = HybridParams(dense_weight=0.5)
    full = fuse(dense, sparse, params)
    as_str = fuse(
        [(str(p), s) for p, s in dense], [(str(p), s) for p, s in sparse], params, limit=7
    )
    assert [str(p) for p, _ in full[:7]] == [p for p, _ in as_str]
    as_int = fuse([(p.int, s) for p, s in dense], [(p.int, s) for p, s in sparse], params)
    assert [uuid.UUID(int=p) for p, _ in as_int] == [p for p, _ in full]  # Edge's keys
    assert fuse(dense, sparse, params, limit=7) == full[:7]
    # Points only in the sparse list tie on dense rank: the smaller id goes first.
    tail = [p for p, s in full if p not in dict(dense) and s == full[-1][1]]
    assert tail == sorted(tail)


def test_mmr_prefers_a_novel_hit_over_a_near_copy_of_the_first() -> None:
    scored = [("a", 0.9), ("a2", 0.89), ("b", 0.7)]
    vectors = {"a": [1.0, 0.0], "a2": [0.99, 0.01], "b": [0.0, 1.0]}
    assert [p for p, _ in mmr(scored, vectors, 2, diversity=0.0)] == ["a", "a2"]
    picked = mmr(scored, vectors, 2, diversity=0.5)
    assert [p for p, _ in picked] == ["a", "b"]
    assert picked[1][1] == 0.7  # hits keep their relevance score


def _hit(chunk: str, text: str, score: float) -> Hit:
    return Hit(score=score, chunk_id=chunk, payload={"text": text, "doc_id": chunk})


def test_dedupe_drops_near_identical_chunks_and_keeps_the_better_one() -> None:
    base = "the surface of venus is about four hundred and sixty four degrees celsius today"
    hits = [
        _hit("1", base, 0.9),
        _hit("2", base.upper() + "  ", 0.8),  # same words: a copy
        _hit("3", "coffee needs sixty grams per litre of water", 0.7),
        _hit("4", base.replace("today", "now"), 0.6),  # 11 of 13 shingles shared
    ]
    assert [h.chunk_id for h in dedupe_hits(hits, 0.9)] == ["1", "3", "4"]
    assert [h.chunk_id for h in dedupe_hits(hits, 0.8)] == ["1", "3"]


@pytest.mark.parametrize(
    ("k", "depth", "expected"), [(10, 10, 2.0), (20, 20, 2.0), (20, 200, 1.0), (20, 30, 4 / 3)]
)
def test_rescoring_oversamples_for_the_final_k_not_the_candidate_depth(
    k: int, depth: int, expected: float
) -> None:
    from pipelines.ranking import rescore_oversampling

    assert rescore_oversampling(2.0, k, depth) == pytest.approx(expected)
    assert rescore_oversampling(1.0, k, depth) == 1.0
