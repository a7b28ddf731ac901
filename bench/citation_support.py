"""Calibrate the citation support floor (RAG_CITATIONS__SUPPORT_FLOOR) on SciFact train.

A citation's support is the cosine between the cited answer sentence and the best window
(one sentence, or two adjacent) of the cited source, both embedded by the service's embedder
(pipelines/citations.py, the same functions the service calls). Here a SciFact train claim
plays the answer sentence:

* positives: the claim against each abstract its qrels name (the abstract the claim is
  about: it supports or contradicts it, either way the source a citation should name);
* hard negatives: the claim against the best-ranked abstracts that are *not* relevant among
  the top 10 that BM25 retrieves for it (same topic, same words, not its source);
* random negatives: the claim against abstracts drawn at random.

The floor is the threshold maximizing F1 of "supported" over positives vs all negatives;
the threshold keeping 90 % of positives supported is reported beside it. Prints JSON and
writes bench/results/citation-support.json.

    .venv/bin/python bench/citation_support.py --claims 200
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import cpu_info, emit_report  # noqa: E402
from pipelines.citations import best_window, embed_windows  # noqa: E402
from pipelines.evaluation import load_beir  # noqa: E402

_TOKEN = re.compile(r"\w+")


def bm25_top(
    corpus: dict[str, tuple[str, str]], queries: dict[str, str], k: int
) -> dict[str, list[str]]:
    """The top k documents (title + text) by BM25 (k1 0.9, b 0.4) for each query."""
    ids = list(corpus)
    docs = [Counter(_TOKEN.findall(f"{t} {x}".lower())) for t, x in corpus.values()]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    avg = float(lengths.mean())
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)
    postings: dict[str, list[tuple[int, int]]] = {}
    for i, d in enumerate(docs):
        for term, tf in d.items():
            postings.setdefault(term, []).append((i, tf))
    k1, b = 0.9, 0.4
    top: dict[str, list[str]] = {}
    for qid, text in queries.items():
        scores = np.zeros(n)
        for term in set(_TOKEN.findall(text.lower())):
            if term not in df:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            for i, tf in postings[term]:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avg))
        best = np.argsort(-scores)[:k]
        top[qid] = [ids[i] for i in best]
    return top


def _summary(values: list[float]) -> dict[str, float]:
    a = np.array(values)
    return {
        "count": len(values),
        "mean": round(float(a.mean()), 4),
        **{f"p{p}": round(float(np.percentile(a, p)), 4) for p in (5, 10, 25, 50, 75, 90, 95)},
    }


def _at(threshold: float, pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    tp = int((pos >= threshold).sum())
    fp = int((neg >= threshold).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / len(pos)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": round(threshold, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "negatives_supported": round(fp / len(neg), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/data/scifact"))
    parser.add_argument("--claims", type=int, default=200, help="train claims sampled")
    parser.add_argument("--hard", type=int, default=2, help="hard negatives per claim")
    parser.add_argument("--random", type=int, default=1, help="random negatives per claim")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/citation-support.json")
    args = parser.parse_args()

    from pipelines.embedder import build_embedder
    from pipelines.settings import Settings

    began = time.perf_counter()
    settings = Settings(_env_file=None)
    embedder = build_embedder(settings)
    data = load_beir(args.dataset, "train")
    rng = random.Random(args.seed)
    claims = sorted(data.queries)
    rng.shuffle(claims)
    claims = claims[: args.claims]
    top = bm25_top(data.corpus, {q: data.queries[q] for q in claims}, k=10)
    doc_ids = list(data.corpus)

    pairs: list[tuple[str, str, str]] = []  # (claim, doc, kind)
    for qid in claims:
        relevant = data.qrels[qid]
        pairs += [(qid, d, "positive") for d in relevant if d in data.corpus]
        hard = [d for d in top[qid] if d not in relevant][: args.hard]
        pairs += [(qid, d, "hard") for d in hard]
        drawn: list[str] = []
        while len(drawn) < args.random:
            d = rng.choice(doc_ids)
            if d not in relevant and d not in hard and d not in drawn:
                drawn.append(d)
        pairs += [(qid, d, "random") for d in drawn]

    claim_vectors = dict(
        zip(
            claims,
            np.asarray(embedder.embed_queries([data.queries[q] for q in claims]), np.float32),
            strict=True,
        )
    )
    windows: dict[str, Any] = {}
    indexing_s: list[float] = []
    for _, doc, _ in pairs:
        if doc not in windows:
            started = time.perf_counter()
            windows[doc] = embed_windows(embedder, data.corpus[doc][1])
            indexing_s.append(time.perf_counter() - started)
    sentences = [(len(spans) + 1) // 2 for spans, _ in windows.values()]
    scores: dict[str, list[float]] = {"positive": [], "hard": [], "random": []}
    for qid, doc, kind in pairs:
        spans, matrix = windows[doc]
        if spans:
            scores[kind].append(best_window(claim_vectors[qid], spans, matrix)[1])

    pos = np.array(scores["positive"])
    neg = np.array(scores["hard"] + scores["random"])
    grid = np.round(np.arange(0.0, 1.0, 0.01), 2)
    by_f1 = max((_at(float(t), pos, neg) for t in grid), key=lambda r: (r["f1"], -r["threshold"]))
    keep90 = float(np.percentile(pos, 10))
    floor = by_f1["threshold"]
    report = {
        "benchmark": "citation-support",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/citation_support.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_info(),
        "cpus": os.cpu_count(),
        "embedder": settings.embedding.model,
        "dataset": f"SciFact train ({len(data.queries)} claims with qrels), {len(claims)} "
        f"sampled (seed {args.seed})",
        "method": "support = max cosine of the claim and a window (1 sentence, or 2 adjacent: "
        "normalized sum) of the abstract, pipelines/citations.py; hard negatives: the best "
        f"{args.hard} non-relevant abstracts among BM25's top 10; {args.random} random",
        "support": {kind: _summary(values) for kind, values in scores.items()},
        "operating_point": "the threshold maximizing F1 of 'supported' (positives vs hard + "
        "random negatives), on a 0.01 grid",
        "support_floor": floor,
        "at_floor": by_f1,
        "at_floor_hard_only": _at(floor, pos, np.array(scores["hard"])),
        "at_floor_random_only": _at(floor, pos, np.array(scores["random"])),
        "keep_90pct_of_positives": _at(keep90, pos, neg),
        # What the service pays per source while the model generates (one embedding call over
        # the source's sentences), on this machine as measured (shared: see `cpus`).
        "per_source": {
            "sentences_mean": round(float(np.mean(sentences)), 1),
            "embed_ms_p50": round(float(np.percentile(indexing_s, 50)) * 1000, 1),
            "embed_ms_p90": round(float(np.percentile(indexing_s, 90)) * 1000, 1),
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
