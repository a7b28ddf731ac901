"""Retrieval metrics against hand-computed values (trec_eval/BEIR conventions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipelines.evaluation import (
    document_scores,
    evaluate_beir,
    evaluate_rankings,
    external_id,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    rank,
    recall_at_k,
)
from pipelines.types import Hit

LOG2_3 = math.log2(3)


def test_binary_ranking_with_a_miss_in_the_middle_scores_known_values() -> None:
    ranking = ["a", "b", "c"]
    qrels = {"a": 1, "c": 1, "d": 1}
    # DCG = 1/log2(2) + 0 + 1/log2(4); ideal has three relevant docs.
    assert ndcg_at_k(ranking, qrels, 3) == pytest.approx(1.5 / (1 + 1 / LOG2_3 + 0.5))
    assert ndcg_at_k(ranking, qrels, 3) == pytest.approx(0.703918, abs=1e-6)
    assert recall_at_k(ranking, qrels, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranking, qrels, 1) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, qrels, 3) == 1.0


def test_graded_relevance_uses_the_grade_as_linear_gain() -> None:
    qrels = {"x": 1, "y": 0, "z": 2, "w": 2}
    # DCG = 1 + 0 + 2/log2(4) = 2; IDCG = 2 + 2/log2(3) + 1/log2(4).
    assert ndcg_at_k(["x", "y", "z"], qrels, 3) == pytest.approx(2 / (2 + 2 / LOG2_3 + 0.5))
    assert ndcg_at_k(["x", "y", "z"], qrels, 3) == pytest.approx(0.531652, abs=1e-6)
    # y is judged but not relevant: it is no hit for recall or MRR.
    assert recall_at_k(["y", "z"], qrels, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(["y", "z"], qrels, 2) == 0.5


def test_first_relevant_at_rank_two_halves_mrr_and_discounts_gain() -> None:
    qrels = {"x": 1, "z": 2}
    # DCG = 0 + 2/log2(3) + 1/log2(4); IDCG = 2 + 1/log2(3).
    expected = (2 / LOG2_3 + 0.5) / (2 + 1 / LOG2_3)
    assert ndcg_at_k(["u", "z", "x"], qrels, 10) == pytest.approx(expected)
    assert ndcg_at_k(["u", "z", "x"], qrels, 10) == pytest.approx(0.669672, abs=1e-6)
    assert mrr_at_k(["u", "z", "x"], qrels, 10) == 0.5
    assert recall_at_k(["u", "z", "x"], qrels, 10) == 1.0


def test_query_with_no_relevant_doc_retrieved_scores_zero() -> None:
    qrels = {"r": 1}
    assert ndcg_at_k(["p", "q"], qrels, 10) == 0.0
    assert recall_at_k(["p", "q"], qrels, 10) == 0.0
    assert mrr_at_k(["p", "q"], qrels, 10) == 0.0
    assert ndcg_at_k([], qrels, 10) == 0.0


def test_relevant_doc_below_the_cutoff_counts_only_for_deeper_recall() -> None:
    ranking = [f"n{i}" for i in range(10)] + ["hit"]
    qrels = {"hit": 1}
    assert ndcg_at_k(ranking, qrels, 10) == 0.0
    assert mrr_at_k(ranking, qrels, 10) == 0.0
    assert recall_at_k(ranking, qrels, 10) == 0.0
    assert recall_at_k(ranking, qrels, 100) == 1.0


def test_ideal_dcg_is_cut_at_k_when_more_docs_are_relevant() -> None:
    qrels = {f"d{i}": 1 for i in range(20)}
    ranking = [f"d{i}" for i in range(10)]
    assert ndcg_at_k(ranking, qrels, 10) == pytest.approx(1.0)
    assert recall_at_k(ranking, qrels, 10) == pytest.approx(0.5)


def test_mean_is_over_judged_queries_and_a_missing_one_counts_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has no relevant doc
    rankings: dict[str, Sequence[str]] = {"q1": ["a"], "q9": ["a"]}  # q2 missing, q9 unjudged
    scores = evaluate_rankings(rankings, qrels)
    assert scores["queries"] == 2
    assert scores["ndcg@10"] == pytest.approx(0.5)
    assert scores["recall@10"] == pytest.approx(0.5)
    assert scores["recall@100"] == pytest.approx(0.5)
    assert scores["mrr@10"] == pytest.approx(0.5)


def test_ties_are_broken_by_document_id_descending_like_trec_eval() -> None:
    assert rank({"a": 0.5, "c": 0.5, "b": 0.9}) == ["b", "c", "a"]


def _hit(doc: str, chunk: int, score: float) -> Hit:
    return Hit(score=score, chunk_id=f"{doc}-{chunk}", payload={"external_id": doc})


def test_chunks_fold_into_documents_with_their_best_score() -> None:
    hits = [_hit("d1", 0, 0.9), _hit("d2", 0, 0.8), _hit("d1", 1, 0.95), _hit("d3", 2, 0.1)]
    scores = document_scores(hits, external_id)
    assert scores == {"d1": 0.95, "d2": 0.8, "d3": 0.1}


async def test_evaluate_beir_dedupes_chunks_before_scoring() -> None:
    results = {
        "claim one": [_hit("d1", 0, 0.9), _hit("d1", 1, 0.85), _hit("d2", 0, 0.8)],
        "claim two": [_hit("d3", 0, 0.7), _hit("d3", 1, 0.6), _hit("d4", 0, 0.5)],
    }
    asked: list[int] = []

    async def search(query: str, k: int) -> list[Hit]:
        asked.append(k)
        return results[query]

    scores = await evaluate_beir(
        search,
        {"q1": "claim one", "q2": "claim two"},
        {"q1": {"d2": 1}, "q2": {"d3": 1}, "q3": {"d1": 1}},  # q3 not among the queries run
        depth=50,
    )
    # q1: d2 is the 2nd document (not the 3rd chunk); q2: d3 first.
    assert scores["queries"] == 2
    assert scores["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["ndcg@10"] == pytest.approx((1 / LOG2_3 + 1.0) / 2)
    assert scores["recall@10"] == 1.0
    assert asked == [50, 50]


def test_load_beir_reads_corpus_split_queries_and_qrels(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "10", "title": "T", "text": "body"}\n{"_id": "11", "text": "other"}\n'
    )
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "1", "text": "judged claim"}\n{"_id": "2", "text": "train claim"}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\t2\n")
    data = load_beir(tmp_path, "test")
    assert data.corpus == {"10": ("T", "body"), "11": ("", "other")}
    assert data.queries == {"1": "judged claim"}
    assert data.qrels == {"1": {"10": 1, "11": 2}}
