"""`rag eval squad`'s trust metrics on scripted answers (hand-computed), off-topic questions,
and the shipped development QA set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.evaluation import (
    CitationCheck,
    GeneratedAnswer,
    QAItem,
    contains_answer,
    evaluate_squad,
    load_squad,
)
from pipelines.types import Hit

QA_DEV = Path(__file__).resolve().parents[2] / "bench" / "qa" / "qa-dev.json"

ITEMS = [
    QAItem("1", "venus", ["464 degrees"], "doc-venus"),
    QAItem("2", "coffee", ["60 grams"], "doc-coffee"),
    QAItem("3", "watt", ["James Watt"], "doc-steam"),
    QAItem("4", "plants", ["glucose"], "doc-plants"),
]
OFF_TOPIC = [QAItem("x1", "football", []), QAItem("x2", "cake", [])]

ANSWERS = {
    # right, two citations: [1] holds the gold answer (supported), [2] does not (unsupported);
    # source 2 is irrelevant (no gold answer, another document)
    "venus": GeneratedAnswer(
        "About 464 degrees [1]. It is hot [2].",
        ["Venus is 464 degrees", "Mars has a volcano"],
        ["doc-venus", "doc-mars"],
        [CitationCheck(1, True), CitationCheck(2, False)],
    ),
    # right, no citation; its one source is the gold document's (relevant without the string)
    "coffee": GeneratedAnswer("60 grams.", ["the ratio for filter coffee"], ["doc-coffee"], []),
    # wrong, one supported citation of a source holding the gold answer; a marker out of range
    # the chain already dropped (not among the citations)
    "watt": GeneratedAnswer(
        "Newton [1].",
        ["James Watt improved it", "x"],
        ["doc-steam", "doc-x"],
        [CitationCheck(1, True)],
    ),
    # nothing found: no sources (the chain removed a marker naming none)
    "plants": GeneratedAnswer(
        "The knowledge base has no information about this.", [], [], [], invalid_markers=1
    ),
    # off-topic: one answered "nothing found", one shown two sources
    "football": GeneratedAnswer("The knowledge base has no information about this.", [], [], []),
    "cake": GeneratedAnswer(
        "Flour [1].", ["Venus is hot", "coffee"], ["doc-venus", "doc-coffee"], []
    ),
}


async def _no_hits(question: str, k: int) -> list[Hit]:
    return []


async def _scripted(question: str) -> GeneratedAnswer:
    return ANSWERS[question]


async def test_trust_metrics_of_scripted_answers() -> None:
    scores = await evaluate_squad(_no_hits, ITEMS, ks=(1,), answer=_scripted, off_topic=OFF_TOPIC)
    assert scores["questions"] == 4
    assert scores["answer_contains_gold"] == pytest.approx(2 / 4)  # venus, coffee
    assert scores["citation_rate"] == scores["cited"] == pytest.approx(2 / 4)  # venus, watt
    assert scores["citation_correct"] == pytest.approx(2 / 4)
    assert scores["citations"] == 3
    assert scores["invalid_markers"] == 1
    assert scores["citation_precision"] == pytest.approx(2 / 3)  # venus [1], watt [1]
    assert scores["supported_citation_rate"] == pytest.approx(2 / 3)
    # shown: 2 + 1 + 2 + 0 = 5; irrelevant: venus [2], watt [2]
    assert scores["sources_mean"] == pytest.approx(5 / 4)
    assert scores["irrelevant_sources_share"] == pytest.approx(2 / 5)
    assert scores["irrelevant_sources_mean"] == pytest.approx(2 / 4)
    assert scores["questions_with_irrelevant_sources"] == pytest.approx(2 / 4)
    assert scores["answerable_nothing_found"] == pytest.approx(1 / 4)
    assert scores["off_topic_questions"] == 2
    assert scores["off_topic_nothing_found"] == pytest.approx(1 / 2)
    assert scores["off_topic_sources_mean"] == pytest.approx(2 / 2)


async def test_citations_read_from_the_text_count_valid_markers_and_report_no_support() -> None:
    answers = {
        "venus": GeneratedAnswer("464 degrees [1][2] [9].", ["464 degrees", "other"]),
        "coffee": GeneratedAnswer("60 grams", ["60 grams"]),
    }

    async def answer(question: str) -> GeneratedAnswer:
        return answers[question]

    scores = await evaluate_squad(_no_hits, ITEMS[:2], ks=(1,), answer=answer)
    assert scores["citation_rate"] == pytest.approx(1 / 2)
    assert scores["citations"] == 2  # [9] names no source
    assert scores["citation_precision"] == pytest.approx(1 / 2)
    assert "supported_citation_rate" not in scores  # no verified citations: not measured
    assert scores["invalid_markers"] == 1


async def test_without_answers_off_topic_scores_searches_that_return_nothing() -> None:
    async def search(question: str, k: int) -> list[Hit]:
        if question == "football":
            return []
        return [Hit(score=0.9, chunk_id="c", payload={"text": "464 degrees"})]

    scores = await evaluate_squad(search, ITEMS[:1], ks=(1,), off_topic=OFF_TOPIC)
    assert scores["hit@1"] == 1.0
    assert scores["off_topic_nothing_found"] == pytest.approx(1 / 2)
    assert "citation_rate" not in scores


async def test_concurrent_questions_score_the_same_as_one_at_a_time() -> None:
    seen: list[str] = []

    async def answer(question: str) -> GeneratedAnswer:
        seen.append(question)
        return ANSWERS[question]

    one = await evaluate_squad(_no_hits, ITEMS, ks=(1,), answer=answer, off_topic=OFF_TOPIC)
    many = await evaluate_squad(
        _no_hits, ITEMS, ks=(1,), answer=answer, off_topic=OFF_TOPIC, concurrency=4
    )
    assert one == many
    assert sorted(seen) == sorted([*ANSWERS, *ANSWERS])


def test_load_squad_keeps_questions_marked_off_topic_and_skips_other_unanswerable(
    tmp_path: Path,
) -> None:
    qas = [
        {"id": "a", "question": "How hot?", "answers": [{"text": "464"}]},
        {"id": "b", "question": "Moons?", "answers": [], "is_impossible": True},
        {
            "id": "c",
            "question": "World Cup?",
            "answers": [],
            "is_impossible": True,
            "off_topic": True,
        },
    ]
    data = {"data": [{"title": "V", "paragraphs": [{"context": "Venus: 464.", "qas": qas}]}]}
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data))
    ds = load_squad(path)
    assert [i.qid for i in ds.items] == ["a"]
    assert [(i.qid, i.answers) for i in ds.off_topic] == [("c", [])]


def test_the_dev_qa_set_has_gold_answers_in_their_documents_and_off_topic_questions() -> None:
    ds = load_squad(QA_DEV)
    assert 40 <= len(ds.items) + len(ds.off_topic) <= 80
    assert len(ds.off_topic) >= 5
    assert len({i.qid for i in [*ds.items, *ds.off_topic]}) == len(ds.items) + len(ds.off_topic)
    for item in ds.items:
        _title, text = ds.corpus[item.context_id]
        assert all(contains_answer(text, [a]) for a in item.answers), item.qid
    # The off-topic questions are about nothing the corpus holds.
    texts = " ".join(t for _, t in ds.corpus.values()).lower()
    assert "world cup" not in texts and "violin" not in texts
