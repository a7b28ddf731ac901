"""`rag eval beir` and `rag eval squad` end to end: real model, real Qdrant Edge, via the CLI;
the eval's answerer over the real chain with the configured prompt variant."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from app.cli import app
from app.cli.eval_index import make_answerer, throwaway_index
from pipelines.evaluation import corpus_jsonl
from pipelines.settings import CitationSettings, Settings
from tests.support.fakes import ScriptedGenerator

pytestmark = pytest.mark.slow

DOCS = {
    "d1": ("Venus", "The surface of Venus is about 464 degrees Celsius, hotter than Mercury."),
    "d2": ("Coffee", "Brew with 60 grams of ground coffee per litre of water."),
    "d3": ("Steam engines", "James Watt improved the steam engine with a separate condenser."),
    "d4": ("Photosynthesis", "Plants turn sunlight, water and carbon dioxide into glucose."),
}
QUERIES = {
    "q1": "How hot is the surface of Venus?",
    "q2": "How many grams of coffee per litre of water?",
    "q3": "Who improved the steam engine condenser?",
    "q4": "How do plants make glucose from sunlight?",
    "q5": "Which volcano is the tallest?",  # its relevant document is not in the corpus
    "q9": "A training claim.",  # judged only in the train split
}


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in DOCS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    test = "".join(f"q{i}\td{i}\t1\n" for i in range(1, 5)) + "q5\td99\t1\n"
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    return root


def _run(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_eval_beir_json_scores_a_known_run_and_writes_the_same_json(
    beir_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "beir.json"
    result = _run("beir", str(beir_dir), "--json", "--out", str(out))
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "queries"} <= result.keys()
    # Four queries find their document first; q5's document is missing from the corpus.
    assert result["queries"] == 5
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert result[metric] == pytest.approx(0.8), metric
    assert result["mode"] == "hybrid"  # the product default
    assert (result["documents"], result["chunking"]) == (4, True)
    assert json.loads(out.read_text()) == result


def test_eval_beir_dense_without_chunking_indexes_one_point_per_document(
    beir_dir: Path,
) -> None:
    result = _run("beir", str(beir_dir), "--mode", "dense", "--no-chunking", "--json")
    assert result["mode"] == "dense"
    assert result["chunking"] is False
    assert result["chunks"] == result["documents"] == 4
    assert result["ndcg@10"] == pytest.approx(0.8)


def test_eval_beir_all_modes_share_one_index_and_the_split_option_works(
    beir_dir: Path,
) -> None:
    result = _run("beir", str(beir_dir), "--mode", "all", "--split", "train", "--json")
    assert set(result) == {"dense", "sparse", "hybrid"}
    assert all(r["queries"] == 1 and r["split"] == "train" for r in result.values())


def test_eval_beir_rejects_a_folder_that_is_not_a_beir_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "beir", str(tmp_path)])
    assert result.exit_code == 2
    assert "corpus.jsonl not found" in " ".join(result.output.split())


TRUST_SHARES = (
    "citation_rate",
    "citation_precision",
    "supported_citation_rate",
    "irrelevant_sources_share",
    "questions_with_irrelevant_sources",
    "answerable_nothing_found",
    "off_topic_nothing_found",
)
OFF_TOPIC = {"id": "off", "question": "Who won the 1998 FIFA World Cup?", "answers": []}


def _squad_file(tmp_path: Path) -> Path:
    paragraphs = [
        ("Venus", DOCS["d1"][1], "How hot is the surface of Venus?", "464 degrees"),
        ("Coffee", DOCS["d2"][1], "How much coffee per litre?", "60 GRAMS"),
        ("Steam", DOCS["d3"][1], "Who improved the steam engine?", "James  Watt"),
    ]
    data = {
        "version": "1.1",
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [{"id": title, "question": q, "answers": [{"text": a}]}],
                    }
                ],
            }
            for title, context, q, a in paragraphs
        ],
    }
    # A question about nothing in the corpus (SQuAD v2.0's unanswerable form, marked off-topic).
    data["data"][0]["paragraphs"][0]["qas"].append(
        {**OFF_TOPIC, "is_impossible": True, "off_topic": True}
    )
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def test_eval_squad_without_answers_reports_hit_rates(tmp_path: Path) -> None:
    result = _run("squad", str(_squad_file(tmp_path)), "--no-answers", "--json")
    assert result["questions"] == 3
    assert (result["hit@1"], result["hit@5"], result["hit@10"]) == (1.0, 1.0, 1.0)
    assert "answer_contains_gold" not in result
    assert result["answers"] is False
    assert (result["off_topic_questions"], result["off_topic_nothing_found"]) == (1, 1.0)


def test_eval_squad_with_answers_generates_through_a_real_vllm_server(
    tmp_path: Path, vllm_server: str, served_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_LLM__BASE_URL", vllm_server)
    monkeypatch.setenv("RAG_LLM__MODEL", served_model)
    monkeypatch.setenv("RAG_LLM__MAX_TOKENS", "48")
    result = _run("squad", str(_squad_file(tmp_path)), "--json")
    assert result["answers"] is True
    assert result["questions"] == 3
    assert result["hit@1"] == 1.0
    # Each question's only source holds the answer: an answer that contains the gold string
    # cites a correct source whenever it cites at all.
    assert 0.0 <= result["citation_correct"] <= 1.0
    # Temperature 0 over one short, explicit source: SmolLM2 gets at least one of these right
    # (0.0 would mean the answers never reached the scorer).
    assert result["answer_contains_gold"] > 0.0
    # The trust metrics (citations verified by the chain: citations are on by default).
    for metric in TRUST_SHARES:
        assert 0.0 <= result[metric] <= 1.0, metric
    assert result["citations_enabled"] is True
    assert result["prompt"] == CitationSettings().prompt
    assert result["off_topic_questions"] == 1
    # The off-topic question clears no relevance floor: nothing found, no sources.
    assert result["off_topic_nothing_found"] == 1.0


def test_eval_beir_min_ndcg_fails_the_run_below_the_target(beir_dir: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "beir", str(beir_dir), "--min-ndcg", "0.9"])
    assert result.exit_code == 1
    assert "below target" in result.output
    assert "ndcg@10" in result.stdout  # the table is still printed


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("few-shot", "Green tea is brewed"), ("cite-last", "then write the number of the source")],
)
async def test_eval_answers_use_the_configured_prompt_and_carry_verified_citations(
    make_settings: Callable[..., Settings], tmp_path: Path, prompt: str, expected: str
) -> None:
    """The answerer the eval and the bench use: the chain with RAG_CITATIONS__PROMPT's variant,
    each answer's sources with their corpus ids and the chain's verified citations (the
    generator scripted behind its port; retrieval, the chain and citations real)."""
    settings = make_settings(citations=CitationSettings(prompt=prompt))
    corpus = corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    generator = ScriptedGenerator(tokens=["The surface ", "is about 464 degrees", " [1]", "."])
    with Progress(disable=True) as bar:
        async with throwaway_index(settings, corpus, chunking=True, progress=bar) as index:
            answer = make_answerer(settings, index, generator, None, max_tokens=32)
            got = await answer("How hot is the surface of Venus?")
    messages = generator.requests[-1].messages
    assert any(expected in m.content for m in messages)
    assert "How hot is the surface of Venus?" in messages[-1].content
    assert got.text == "The surface is about 464 degrees [1]."
    assert got.source_docs[0] == "d1"  # the corpus id of the best source's document
    assert len(got.source_docs) == len(got.sources) >= 1
    assert got.citations is not None and [c.n for c in got.citations] == [1]
