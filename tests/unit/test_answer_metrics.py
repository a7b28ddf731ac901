"""SQuAD-style QA metrics: hit@k, answer contains gold, citation correctness (hand-computed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.evaluation import (
    GeneratedAnswer,
    QAItem,
    cited_numbers,
    contains_answer,
    evaluate_squad,
    load_squad,
)
from pipelines.types import Hit


def test_contains_answer_ignores_case_and_whitespace() -> None:
    assert contains_answer("It is  464\n degrees Celsius", ["464 DEGREES celsius"])
    assert not contains_answer("It is 46 degrees", ["464 degrees"])
    assert not contains_answer("anything", ["", "   "])


def test_cited_numbers_in_order_of_first_mention() -> None:
    assert cited_numbers("Hot [2], very hot [1][2] and [10].") == [2, 1, 10]


def test_load_squad_keeps_answerable_questions_and_distinct_contexts(tmp_path: Path) -> None:
    data = {
        "data": [
            {
                "title": "Venus",
                "paragraphs": [
                    {
                        "context": "Venus is about 464 degrees.",
                        "qas": [
                            {"id": "q1", "question": "How hot?", "answers": [{"text": "464"}]},
                            {
                                "id": "q2",
                                "question": "Moons?",
                                "answers": [],
                                "is_impossible": True,
                            },
                        ],
                    },
                    {"context": "Venus is about 464 degrees.", "qas": []},  # same paragraph
                ],
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    ds = load_squad(path)
    assert [(i.qid, i.answers, i.context_id) for i in ds.items] == [("q1", ["464"], "0-0")]
    assert ds.corpus == {"0-0": ("Venus", "Venus is about 464 degrees.")}


def _hits(*texts: str) -> list[Hit]:
    return [
        Hit(score=1.0 - i / 10, chunk_id=str(i), payload={"text": t}) for i, t in enumerate(texts)
    ]


async def test_hit_at_k_counts_the_first_chunk_holding_an_answer() -> None:
    results = {
        "a": _hits("Venus is 464 degrees", "x"),  # hit at rank 1
        "b": _hits("x", "y", "z", "60 grams of coffee"),  # rank 4
        "c": _hits("x", "y", "z", "w", "v", "Watt"),  # rank 6
        "d": _hits("nothing"),  # miss
    }
    items = [
        QAItem("1", "a", ["464 degrees"]),
        QAItem("2", "b", ["60 Grams"]),
        QAItem("3", "c", ["watt"]),
        QAItem("4", "d", ["oxygen"]),
    ]
    asked: list[int] = []

    async def search(question: str, k: int) -> list[Hit]:
        asked.append(k)
        return results[question][:k]

    scores = await evaluate_squad(search, items, ks=(1, 5, 10))
    assert scores == {"hit@1": 0.25, "hit@5": 0.5, "hit@10": 0.75, "questions": 4}
    assert asked == [10, 10, 10, 10]


async def test_answer_metrics_check_the_text_and_the_cited_sources() -> None:
    answers = {
        # right answer, cites the source that holds it
        "a": GeneratedAnswer("About 464 degrees [1].", ["Venus is 464 degrees", "other"]),
        # right answer, but the cited source does not hold it
        "b": GeneratedAnswer("60 grams [2].", ["60 grams of coffee", "unrelated"]),
        # wrong answer that cites a correct source, and a citation out of range
        "c": GeneratedAnswer("I think Newton [1] [7].", ["Watt improved it"]),
        # no citation at all
        "d": GeneratedAnswer("Oxygen.", ["plants make oxygen"]),
    }
    items = [
        QAItem("1", "a", ["464 degrees"]),
        QAItem("2", "b", ["60 grams"]),
        QAItem("3", "c", ["Watt"]),
        QAItem("4", "d", ["oxygen"]),
    ]

    async def search(question: str, k: int) -> list[Hit]:
        return []

    async def answer(question: str) -> GeneratedAnswer:
        return answers[question]

    scores = await evaluate_squad(search, items, ks=(1,), answer=answer)
    assert scores["hit@1"] == 0.0
    assert scores["answer_contains_gold"] == pytest.approx(3 / 4)  # a, b, d
    assert scores["cited"] == pytest.approx(3 / 4)  # a, b, c
    assert scores["citation_correct"] == pytest.approx(2 / 4)  # a, c
