"""Retrieval and QA quality: BEIR metrics as trec_eval computes them, SQuAD-style hit rates."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.types import Hit

# query id -> document id -> graded relevance (0 or less: judged not relevant)
Qrels = dict[str, dict[str, int]]
# query, number of hits -> hits ranked best first (RetrievalService.search fits behind a lambda)
SearchFn = Callable[[str, int], Awaitable[Sequence[Hit]]]


def rank(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first; ties broken by document id, descending, as trec_eval does."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Linear gain (the judged grade) with a log2(rank + 1) discount; 0 when nothing is relevant."""
    dcg = sum(max(relevance.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the top k."""
    relevant = {doc for doc, g in relevance.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the top k, else 0."""
    for i, doc in enumerate(ranking[:k]):
        if relevance.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10, recall@10/@100 and MRR@10 over the queries with at least one relevant doc.

    A judged query missing from `rankings` counts as retrieving nothing (scores 0); ranked
    queries without judgments are ignored.
    """
    judged = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for query in judged:
        ranking, relevance = rankings.get(query, []), qrels[query]
        totals["ndcg@10"] += ndcg_at_k(ranking, relevance, 10)
        totals["recall@10"] += recall_at_k(ranking, relevance, 10)
        totals["recall@100"] += recall_at_k(ranking, relevance, 100)
        totals["mrr@10"] += mrr_at_k(ranking, relevance, 10)
    n = len(judged)
    out = {name: (total / n if n else 0.0) for name, total in totals.items()}
    out["queries"] = n  # an int: JSON shows a count
    return out


def document_scores(hits: Iterable[Hit], doc_id_of: Callable[[Hit], str]) -> dict[str, float]:
    """Chunks to documents: a document scores the best of its chunks."""
    scores: dict[str, float] = {}
    for hit in hits:
        doc = doc_id_of(hit)
        if doc not in scores or hit.score > scores[doc]:
            scores[doc] = hit.score
    return scores


def external_id(hit: Hit) -> str:
    """The corpus id a jsonl corpus line was ingested with."""
    return str(hit.payload.get("external_id", hit.doc_id))


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """One BEIR split: the whole corpus, the split's judged queries and their qrels."""

    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: Qrels


def load_qrels(path: Path) -> Qrels:
    """A BEIR qrels TSV: `query-id<TAB>corpus-id<TAB>score`, with a header line."""
    qrels: Qrels = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    """`corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv` under `root`."""
    qrels = load_qrels(root / "qrels" / f"{split}.tsv")
    corpus: dict[str, tuple[str, str]] = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = str(row["text"])
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


async def evaluate_beir(
    search: SearchFn,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    depth: int = 100,
    doc_id_of: Callable[[Hit], str] = external_id,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Search every query for `depth` chunks, fold chunks into documents, and score the run.

    With several chunks per document fewer than `depth` documents come back, so recall@100
    is over the documents of the top `depth` chunks. `progress` is told of each query done.
    """
    rankings: dict[str, list[str]] = {}
    for query_id, text in queries.items():
        hits = await search(text, depth)
        rankings[query_id] = rank(document_scores(hits, doc_id_of))
        if progress is not None:
            progress(1)
    return evaluate_rankings(rankings, {q: rel for q, rel in qrels.items() if q in queries})


def corpus_jsonl(corpus: Mapping[str, tuple[str, str]], path: Path) -> Path:
    """Write a corpus as the jsonl the ingest job reads (`_id`, `title`, `text`)."""
    with path.open("w", encoding="utf-8") as fh:
        for doc_id, (title, text) in corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    return path


# -- end-to-end QA on a SQuAD-format file -------------------------------------------------


def normalize_answer(text: str) -> str:
    """Case- and whitespace-insensitive form used for every contains-the-answer check."""
    return " ".join(text.lower().split())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    norm = normalize_answer(text)
    return any(a and a in norm for a in (normalize_answer(x) for x in answers))


@dataclass(frozen=True, slots=True)
class QAItem:
    qid: str
    question: str
    answers: list[str]  # empty: an off-topic question, whose right answer is "nothing found"
    context_id: str = ""


@dataclass(frozen=True, slots=True)
class SquadDataset:
    """Answerable questions and the contexts they were asked about (the corpus to search);
    `off_topic`: questions nothing in the corpus answers."""

    items: list[QAItem]
    corpus: dict[str, tuple[str, str]]  # context id -> (title, text)
    off_topic: list[QAItem] = field(default_factory=list)


def load_squad(path: Path) -> SquadDataset:
    """SQuAD v1.1/v2.0 JSON (`data[].paragraphs[].{context, qas[]}`). Each distinct paragraph
    becomes one corpus document. Unanswerable questions (no answer strings) are skipped,
    except those marked `"off_topic": true` (about nothing in the whole corpus, unlike SQuAD
    v2.0's, which are about their paragraph): those are `off_topic`."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    items: list[QAItem] = []
    off_topic: list[QAItem] = []
    corpus: dict[str, tuple[str, str]] = {}
    ids: dict[str, str] = {}
    for a, article in enumerate(raw.get("data", [])):
        title = str(article.get("title") or "")
        for p, para in enumerate(article.get("paragraphs", [])):
            context = str(para.get("context") or "")
            if not context.strip():
                continue
            context_id = ids.setdefault(context, f"{a}-{p}")
            corpus.setdefault(context_id, (title, context))
            for qa in para.get("qas", []):
                answers = [str(x.get("text", "")) for x in qa.get("answers", [])]
                answers = list(dict.fromkeys(x for x in answers if x.strip()))
                question = str(qa.get("question", ""))
                if not question.strip():
                    continue
                qid = str(qa.get("id", f"{context_id}-{len(items) + len(off_topic)}"))
                if answers:
                    items.append(QAItem(qid, question, answers, context_id))
                elif qa.get("off_topic") is True:
                    off_topic.append(QAItem(qid, question, []))
    return SquadDataset(items=items, corpus=corpus, off_topic=off_topic)


_CITATION = re.compile(r"\[(\d+)\]")


def cited_numbers(answer: str) -> list[int]:
    """The source numbers an answer cites as `[n]`, in order of first mention."""
    return list(dict.fromkeys(int(n) for n in _CITATION.findall(answer)))


@dataclass(frozen=True, slots=True)
class CitationCheck:
    """One citation of an answer as the chain verified it: source `n`, supported or not."""

    n: int
    supported: bool


@dataclass(slots=True)
class GeneratedAnswer:
    text: str
    sources: list[str] = field(default_factory=list)  # source texts; `[n]` is sources[n - 1]
    # The corpus id of each source's document (as `sources`); empty: unknown.
    source_docs: list[str] = field(default_factory=list)
    # The chain's verified citations; None: read `[n]` markers off the text (no support).
    citations: list[CitationCheck] | None = None
    # Markers naming no source given (the chain removed them from the text; or, read off the
    # text, those out of range).
    invalid_markers: int = 0

    def checked_citations(self) -> list[CitationCheck]:
        """The valid citations: the chain's, or each `[n]` naming a source (support unknown:
        counted unsupported)."""
        if self.citations is not None:
            return [c for c in self.citations if 1 <= c.n <= len(self.sources)]
        numbers = cited_numbers(self.text)
        return [CitationCheck(n, False) for n in numbers if 1 <= n <= len(self.sources)]


# question -> the generated answer with its numbered sources
AnswerFn = Callable[[str], Awaitable[GeneratedAnswer]]


@dataclass(slots=True)
class _Tally:
    """Counts summed over the questions (each question adds its own)."""

    hits_at: dict[int, int]
    contains: int = 0
    cited: int = 0
    correct: int = 0
    citations: int = 0
    precise: int = 0
    supported: int = 0
    invalid: int = 0
    shown: int = 0
    irrelevant: int = 0
    with_irrelevant: int = 0
    answerable_nothing: int = 0
    off_topic_nothing: int = 0
    off_topic_shown: int = 0
    verified: bool = False


def _relevant(source: str, doc: str, item: QAItem) -> bool:
    """A shown source is relevant if it holds a gold answer or comes from the gold document."""
    return contains_answer(source, item.answers) or bool(doc and doc == item.context_id)


def _score_answer(got: GeneratedAnswer, item: QAItem, tally: _Tally) -> None:
    tally.contains += contains_answer(got.text, item.answers)
    checks = got.checked_citations()
    tally.verified |= got.citations is not None
    numbers = list(dict.fromkeys(c.n for c in checks))
    tally.cited += bool(numbers)
    tally.correct += any(contains_answer(got.sources[n - 1], item.answers) for n in numbers)
    tally.citations += len(checks)
    tally.precise += sum(contains_answer(got.sources[c.n - 1], item.answers) for c in checks)
    tally.supported += sum(c.supported for c in checks)
    tally.invalid += got.invalid_markers
    if got.citations is None:
        tally.invalid += sum(not 1 <= n <= len(got.sources) for n in cited_numbers(got.text))
    docs = got.source_docs if len(got.source_docs) == len(got.sources) else [""] * len(got.sources)
    irrelevant = sum(not _relevant(s, d, item) for s, d in zip(got.sources, docs, strict=True))
    tally.shown += len(got.sources)
    tally.irrelevant += irrelevant
    tally.with_irrelevant += irrelevant > 0
    tally.answerable_nothing += not got.sources


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


async def evaluate_squad(
    search: SearchFn,
    items: Sequence[QAItem],
    *,
    ks: Sequence[int] = (1, 5, 10),
    answer: AnswerFn | None = None,
    progress: Callable[[int], None] | None = None,
    off_topic: Sequence[QAItem] = (),
    concurrency: int = 1,
) -> dict[str, float]:
    """hit@k: a chunk among the top k contains a gold answer. With `answer`, trust too:

    - `answer_contains_gold`: answers containing a gold answer;
    - `citation_rate` (also `cited`): answers with at least one valid citation (`[n]` naming
      a source given); `citation_correct`: answers citing a source that holds a gold answer;
    - `citation_precision`: of all valid citations, the share whose source holds a gold
      answer; `supported_citation_rate`: the share the chain marked supported (only when
      the answers carry the chain's verified citations); `invalid_markers`: `[n]` naming no
      source given;
    - `irrelevant_sources_share` / `_mean`: shown sources neither holding a gold answer nor
      from the gold document, as a share of all shown and per question;
      `questions_with_irrelevant_sources`; `sources_mean`; `answerable_nothing_found`;
    - with `off_topic` questions: `off_topic_nothing_found`, the share answered with no
      sources (without `answer`: searches that return nothing), `off_topic_sources_mean`.

    `concurrency` questions are in flight at once (a batching engine answers them together).
    """
    ks = sorted(set(ks))
    tally = _Tally(hits_at=dict.fromkeys(ks, 0))
    gate = asyncio.Semaphore(max(concurrency, 1))

    async def one(item: QAItem) -> None:
        async with gate:
            if item.answers:
                hits = await search(item.question, ks[-1])
                first = next(
                    (i for i, h in enumerate(hits) if contains_answer(h.text, item.answers)), None
                )
                for k in ks:
                    tally.hits_at[k] += first is not None and first < k
                if answer is not None:
                    _score_answer(await answer(item.question), item, tally)
            elif answer is not None:
                got = await answer(item.question)
                tally.off_topic_nothing += not got.sources and not got.checked_citations()
                tally.off_topic_shown += len(got.sources)
            else:
                hits = await search(item.question, ks[-1])
                tally.off_topic_nothing += not hits
                tally.off_topic_shown += len(hits)
        if progress is not None:
            progress(1)

    await asyncio.gather(*(one(item) for item in [*items, *off_topic]))
    n = len(items)
    out: dict[str, float] = {f"hit@{k}": _ratio(tally.hits_at[k], n) for k in ks}
    if answer is not None:
        out["answer_contains_gold"] = _ratio(tally.contains, n)
        out["cited"] = _ratio(tally.cited, n)
        out["citation_correct"] = _ratio(tally.correct, n)
        out["citation_rate"] = out["cited"]
        out["citation_precision"] = _ratio(tally.precise, tally.citations)
        if tally.verified:
            out["supported_citation_rate"] = _ratio(tally.supported, tally.citations)
        out["citations"] = tally.citations
        out["citations_per_answer"] = _ratio(tally.citations, n)
        out["invalid_markers"] = tally.invalid
        out["sources_mean"] = _ratio(tally.shown, n)
        out["irrelevant_sources_share"] = _ratio(tally.irrelevant, tally.shown)
        out["irrelevant_sources_mean"] = _ratio(tally.irrelevant, n)
        out["questions_with_irrelevant_sources"] = _ratio(tally.with_irrelevant, n)
        out["answerable_nothing_found"] = _ratio(tally.answerable_nothing, n)
    out["questions"] = n
    if off_topic:
        out["off_topic_questions"] = len(off_topic)
        out["off_topic_nothing_found"] = _ratio(tally.off_topic_nothing, len(off_topic))
        out["off_topic_sources_mean"] = _ratio(tally.off_topic_shown, len(off_topic))
    return out
