"""Citation support with the real embedder: a cited sentence is matched to the sentence of
its source that says the same thing, and a citation of a source that does not is marked
unsupported at the calibrated floor."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.citations import AnswerCitations
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import CitationSettings
from pipelines.types import GenerationChunk

PLANETS = (
    "The Solar System formed about 4.6 billion years ago. Mercury is the smallest planet and "
    "the closest to the Sun. Venus has the hottest surface of any planet, about 464 degrees "
    "Celsius, because its thick carbon dioxide atmosphere traps heat. Mars has the tallest "
    "volcano, Olympus Mons. Saturn's rings are made mostly of water ice."
)
COFFEE = (
    "The usual ratio for filter coffee is 60 grams of coffee per litre of water. Grind size "
    "follows the brewing method: coarse for a French press, fine for espresso. Water just off "
    "the boil extracts the best flavour."
)
VENUS = "Venus has the hottest surface of any planet, about 464 degrees Celsius"


@dataclass(frozen=True)
class Passage:
    n: int
    text: str
    chunk_id: str


SOURCES = [Passage(1, PLANETS, "chunk-planets"), Passage(2, COFFEE, "chunk-coffee")]


async def test_paraphrase_is_matched_to_its_sentence_and_an_unrelated_source_is_not(
    embedder: SentenceTransformerEmbedder,
) -> None:
    citations = AnswerCitations.begin(
        CitationSettings(), embedder, "Which planet is the hottest?", SOURCES
    )
    assert citations is not None
    tokens = [
        "No planet is hotter than Venus: its surface reaches roughly 464 °C, as the dense ",
        "CO2 atmosphere holds the heat in [",
        "1]. Saturn's rings are mostly ice [2",
        "].",
    ]
    chunks = [citations.shown(GenerationChunk(t)) for t in tokens]
    chunks.append(citations.shown(GenerationChunk("", finish_reason="stop")))
    answer = "".join(c.text for c in chunks)
    assert answer == "".join(tokens)

    report = await citations.verify()
    assert report.invalid == 0
    venus, rings = report.citations
    assert (venus.n, venus.chunk_id, rings.n, rings.chunk_id) == (
        1,
        "chunk-planets",
        2,
        "chunk-coffee",
    )
    assert answer[venus.answer_span.start : venus.answer_span.end].startswith("No planet")
    assert answer[rings.answer_span.start : rings.answer_span.end] == (
        "Saturn's rings are mostly ice [2]."
    )
    assert venus.source_span is not None and rings.source_span is not None
    assert VENUS in PLANETS[venus.source_span.start : venus.source_span.end]
    assert venus.supported and venus.support >= CitationSettings().support_floor
    assert not rings.supported and rings.support < venus.support


async def test_best_span_of_each_source_is_its_sentence_closest_to_the_question(
    embedder: SentenceTransformerEmbedder,
) -> None:
    citations = AnswerCitations.begin(
        CitationSettings(), embedder, "What grind size suits a French press?", SOURCES
    )
    assert citations is not None
    best = await citations.best_spans()
    coffee = best[2]
    assert coffee is not None and "French press" in COFFEE[coffee.start : coffee.end]
    assert best[1] is not None


def test_citations_off_or_no_sources_do_no_work(embedder: SentenceTransformerEmbedder) -> None:
    off = CitationSettings(enabled=False)
    assert AnswerCitations.begin(off, embedder, "q", SOURCES) is None
    assert AnswerCitations.begin(CitationSettings(), embedder, "q", []) is None
