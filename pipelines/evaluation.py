"""Retrieval and QA quality: BEIR metrics as trec_eval computes them, SQuAD-style hit rates."""

from __future__ import annotations

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
    answers: list[str]
    context_id: str = ""


@dataclass(frozen=True, slots=True)
class SquadDataset:
    """Answerable questions and the contexts they were asked about (the corpus to search)."""

    items: list[QAItem]
    corpus: dict[str, tuple[str, str]]  # context id -> (title, text)


def load_squad(path: Path) -> SquadDataset:
    """SQuAD v1.1/v2.0 JSON (`data[].paragraphs[].{context, qas[]}`); unanswerable questions
    (no answer strings) are skipped. Each distinct paragraph becomes one corpus document."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    items: list[QAItem] = []
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
                if not answers or not str(qa.get("question", "")).strip():
                    continue
                qid = str(qa.get("id", f"{context_id}-{len(items)}"))
                items.append(QAItem(qid, str(qa["question"]), answers, context_id))
    return SquadDataset(items=items, corpus=corpus)


_CITATION = re.compile(r"\[(\d+)\]")


def cited_numbers(answer: str) -> list[int]:
    """The source numbers an answer cites as `[n]`, in order of first mention."""
    return list(dict.fromkeys(int(n) for n in _CITATION.findall(answer)))


@dataclass(slots=True)
class GeneratedAnswer:
    text: str
    sources: list[str] = field(default_factory=list)  # source texts; `[n]` is sources[n - 1]


# question -> the generated answer with its numbered sources
AnswerFn = Callable[[str], Awaitable[GeneratedAnswer]]


async def evaluate_squad(
    search: SearchFn,
    items: Sequence[QAItem],
    *,
    ks: Sequence[int] = (1, 5, 10),
    answer: AnswerFn | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """hit@k: a chunk among the top k contains a gold answer; with `answer`, also the rate of
    answers containing a gold answer, of answers citing a source, and of answers whose cited
    sources include one that contains a gold answer (citation correctness)."""
    ks = sorted(set(ks))
    hits_at = dict.fromkeys(ks, 0)
    contains = cited = correct = 0
    for item in items:
        hits = await search(item.question, ks[-1])
        first = next((i for i, h in enumerate(hits) if contains_answer(h.text, item.answers)), None)
        for k in ks:
            hits_at[k] += first is not None and first < k
        if answer is not None:
            got = await answer(item.question)
            contains += contains_answer(got.text, item.answers)
            numbers = [n for n in cited_numbers(got.text) if 1 <= n <= len(got.sources)]
            cited += bool(numbers)
            correct += any(contains_answer(got.sources[n - 1], item.answers) for n in numbers)
        if progress is not None:
            progress(1)
    n = len(items)
    out: dict[str, float] = {f"hit@{k}": (hits_at[k] / n if n else 0.0) for k in ks}
    if answer is not None:
        out["answer_contains_gold"] = contains / n if n else 0.0
        out["cited"] = cited / n if n else 0.0
        out["citation_correct"] = correct / n if n else 0.0
    out["questions"] = n
    return out
