"""Calibrate the relevance floor (issue 19) on SciFact train; score it on SciFact test.

Every query of both splits runs through the product's `RetrievalService` (the code behind
`/v1/search` and the chain) over SciFact ingested by the product's ingest job, once per mode,
for its best `--depth` chunks with the floor off; each hit carries its raw cosine (sparse
mode: computed for its hits) and BM25 score. Per mode and per feature set (cosine, BM25, both;
CHOSEN is what the settings ship), a logistic regression on those absolute scores (train:
relevant vs non-relevant chunks among each query's top 10) maps a hit to a probability of
relevance; the train floor is the highest that keeps train recall@5 and recall@10 within
`--max-recall-loss` of no floor, the lowest over the modes (`--floor` overrides it).

Then, on SciFact test, before (today: the first k of the search's ranking) and after (of
the k + min(k, 20) candidates the service fetches, those below the floor dropped, ordered as
the service orders them, the first k), side by side: share of shown chunks that are
relevant, recall@5/@10 and nDCG@10 (documents, a document at its best chunk), mean sources
shown, share of queries with none; and the same ranked by probability with no floor. Last,
questions off the collection's topic: samples/ (another domain, on-topic and off-topic
questions) and the samples' questions against SciFact, the best probability each gets.

Run it from a clone of the tree when others edit it; the index is built once under
`--data-dir` and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import SAMPLE_QUESTIONS, cpu_info, emit_report  # noqa: E402
from pipelines.access import FULL_ACCESS  # noqa: E402
from pipelines.evaluation import load_qrels, ndcg_at_k, recall_at_k  # noqa: E402
from pipelines.ranking import Calibration  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.types import SearchMode  # noqa: E402

log = logging.getLogger("bench.relevance_floor")

# Questions none of samples/ answers: what the floor must leave without sources.
OFF_TOPIC = [
    "What is the capital of Peru?",
    "How do I reset a Cisco router?",
    "Who won the 1998 football World Cup?",
    "What is a good recipe for lasagna?",
    "How do I renew a passport?",
]
FLOORS = [
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.06,
    0.08,
    0.1,
    0.12,
    0.15,
    0.2,
    0.25,
    0.3,
]
FIT_DEPTH = 10  # the calibration learns from each train query's top 10 chunks
MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
# What the service ranks by after the floor (RetrievalService.search): the probability in
# dense (the same order) and sparse mode, the fused score in hybrid mode.
BY_PROBABILITY: dict[SearchMode, bool] = {"dense": True, "sparse": True, "hybrid": False}


@dataclass(slots=True)
class Row:
    """One retrieved chunk: its document, its raw scores (0 where absent)."""

    doc: str
    dense: float
    sparse: float


# The features a calibration may read, per mode; CHOSEN is what the settings ship.
VARIANTS: dict[str, tuple[str, ...]] = {
    "cosine": ("dense",),
    "bm25": ("sparse",),
    "cosine+bm25": ("dense", "sparse"),
}
MODE_VARIANTS: dict[SearchMode, tuple[str, ...]] = {
    "dense": ("cosine",),
    "sparse": ("bm25", "cosine", "cosine+bm25"),
    "hybrid": ("cosine+bm25", "cosine", "bm25"),
}
CHOSEN: dict[SearchMode, str] = {
    "dense": "cosine",
    "sparse": "cosine+bm25",
    "hybrid": "cosine+bm25",
}


def features(rows: Sequence[Row], variant: str) -> np.ndarray:
    cols = VARIANTS[variant]
    return np.array([[getattr(r, c) for c in cols] for r in rows], dtype=np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton's method: [intercept, weights...]."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + l2 * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def as_calibration(w: np.ndarray, variant: str) -> Calibration:
    weights = dict(zip(VARIANTS[variant], map(float, w[1:]), strict=True))
    return Calibration(float(w[0]), **weights)


def auc(p: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def shown(
    rows: Sequence[Row], probs: Sequence[float], k: int, floor: float | None, by_p: bool
) -> list[int]:
    """The indices the service shows for k: of the k + min(k, 20) candidates it fetches (the
    room it keeps for near-duplicates, none on SciFact), those at or above the floor, in the
    search's order or (`by_p`) best probability first, the first k. `floor` None: today, the
    first k of the search's ranking."""
    pool = range(min(len(rows), k + min(k, 20)))
    if floor is None:
        return list(pool)[:k]
    kept = [i for i in pool if probs[i] >= floor]
    return sorted(kept, key=lambda i: -probs[i])[:k] if by_p else kept[:k]


def doc_ranking(rows: Sequence[Row], idx: Sequence[int]) -> list[str]:
    seen: dict[str, None] = {}
    for i in idx:
        seen.setdefault(rows[i].doc, None)
    return list(seen)


def split_metrics(
    runs: dict[str, list[Row]],
    probs: dict[str, list[float]],
    qrels: dict[str, dict[str, int]],
    floor: float | None,
    by_p: bool,
) -> dict[str, float]:
    judged = [q for q in runs if any(g > 0 for g in qrels.get(q, {}).values())]
    out = {"recall@5": 0.0, "recall@10": 0.0, "ndcg@10": 0.0}
    shown_n = relevant_n = none = 0
    for q in judged:
        rows, p, rel = runs[q], probs[q], qrels[q]
        top5, top10 = shown(rows, p, 5, floor, by_p), shown(rows, p, 10, floor, by_p)
        out["recall@5"] += recall_at_k(doc_ranking(rows, top5), rel, 5)
        ranking10 = doc_ranking(rows, top10)
        out["recall@10"] += recall_at_k(ranking10, rel, 10)
        out["ndcg@10"] += ndcg_at_k(ranking10, rel, 10)
        shown_n += len(top5)
        relevant_n += sum(rel.get(rows[i].doc, 0) > 0 for i in top5)
        none += not top5
    n = len(judged)
    result = {name: round(v / n, 4) for name, v in out.items()}
    result["relevant_share_of_shown@5"] = round(relevant_n / max(shown_n, 1), 4)
    result["mean_shown@5"] = round(shown_n / n, 3)
    result["queries_with_none@5"] = round(none / n, 4)
    result["queries"] = n
    return result


async def _ensure_ingested(settings: Settings, paths: list[Path], collection: str) -> None:
    from ingest.job import build_pipeline
    from pipelines.core import open_core

    async with open_core(settings) as core:
        if collection in await core.store.list_collections():
            return
        log.warning("ingesting %s into %s (once)", [str(p) for p in paths], collection)
        summary = await build_pipeline(core).run(paths, collection)
        log.warning("ingested %d chunks in %.0fs", summary.chunks, summary.seconds)


async def collect(
    retrieval: Any, collection: str, queries: dict[Any, str], mode: SearchMode, depth: int
) -> dict[Any, list[Row]]:
    runs: dict[Any, list[Row]] = {}
    for qid, text in queries.items():
        hits = await retrieval.search(
            text, collection, access=FULL_ACCESS, k=depth, mode=mode, min_score=0.0
        )
        runs[qid] = [
            Row(
                doc=str(h.payload.get("external_id", h.payload.get("source", h.doc_id))),
                dense=h.dense_score or 0.0,
                sparse=h.sparse_score or 0.0,
            )
            for h in hits
        ]
    return runs


def probabilities(runs: dict[str, list[Row]], cal: Calibration) -> dict[str, list[float]]:
    return {q: [cal.probability(r.dense, r.sparse) for r in rows] for q, rows in runs.items()}


def load_queries(path: Path) -> dict[str, str]:
    import json

    with path.open() as fh:
        return {str(row["_id"]): str(row["text"]) for row in map(json.loads, fh) if row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/scifact")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/ragserve-relevance-floor"))
    ap.add_argument("--depth", type=int, default=20, help="chunks retrieved per query")
    ap.add_argument("--max-recall-loss", type=float, default=0.005)
    ap.add_argument("--floor", type=float, help="the floor scored on test (default: train's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    settings = Settings(_env_file=None, data_dir=args.data_dir)
    every = load_queries(args.dataset / "queries.jsonl")
    qrels = {s: load_qrels(args.dataset / "qrels" / f"{s}.tsv") for s in ("train", "test")}
    queries = {s: {q: every[q] for q in qrels[s] if q in every} for s in qrels}
    started = time.perf_counter()

    async def run() -> dict[str, Any]:
        from pipelines.core import open_core

        await _ensure_ingested(settings, [args.dataset / "corpus.jsonl"], "scifact")
        samples = sorted(p for p in args.samples.iterdir() if p.is_file())
        await _ensure_ingested(settings, samples, "samples")
        report: dict[str, Any] = {
            "command": " ".join([".venv/bin/python", *sys.argv]),
            "cpu": cpu_info(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "depth": args.depth,
            "fit_depth": FIT_DEPTH,
            "max_recall_loss": args.max_recall_loss,
            "modes": {},
        }
        async with open_core(settings) as core:
            retrieval = core.retrieval
            # Every hit's cosine and BM25 score, whatever the mode (sparse: cosines computed),
            # in the search's own order: weights too small to move p (every hit at 0.5).
            tiny = Calibration(0.0, dense=1e-300, sparse=1e-300)
            retrieval.calibrations = dict.fromkeys(MODES, tiny)
            runs = {
                mode: {
                    s: await collect(retrieval, "scifact", queries[s], mode, args.depth)
                    for s in ("train", "test")
                }
                for mode in MODES
            }
            sample_runs = {
                (label, mode): await collect(retrieval, "samples", dict(enumerate(asked)), mode, 5)
                for label, asked in (("on_topic", SAMPLE_QUESTIONS), ("off_topic", OFF_TOPIC))
                for mode in MODES
            }
            # Off SciFact's topic (biomedical claims): the samples' questions and the others.
            elsewhere = dict(enumerate(SAMPLE_QUESTIONS + OFF_TOPIC))
            scifact_off = {m: await collect(retrieval, "scifact", elsewhere, m, 5) for m in MODES}
        fitted: dict[tuple[SearchMode, str], Calibration] = {}
        floors: dict[tuple[SearchMode, str], float] = {}
        for mode in MODES:
            report["modes"][mode] = {"chosen": CHOSEN[mode], "variants": {}}
            train = runs[mode]["train"]
            rows = [r for q in train for r in train[q][:FIT_DEPTH]]
            y = np.array(
                [
                    float(qrels["train"][q].get(r.doc, 0) > 0)
                    for q in train
                    for r in train[q][:FIT_DEPTH]
                ]
            )
            for variant in MODE_VARIANTS[mode]:
                cal = as_calibration(fit_logistic(features(rows, variant), y), variant)
                fitted[mode, variant] = cal
                p_train = probabilities(train, cal)
                flat = np.array([p for q in train for p in p_train[q][:FIT_DEPTH]])
                by_p = BY_PROBABILITY[mode]
                base = split_metrics(train, p_train, qrels["train"], None, by_p)
                sweep = {f: split_metrics(train, p_train, qrels["train"], f, by_p) for f in FLOORS}
                ok = [
                    f
                    for f, m in sweep.items()
                    if base["recall@5"] - m["recall@5"] <= args.max_recall_loss
                    and base["recall@10"] - m["recall@10"] <= args.max_recall_loss
                ]
                floors[mode, variant] = max(ok, default=0.0)
                loss = -np.mean(
                    y * np.log(np.clip(flat, 1e-12, 1))
                    + (1 - y) * np.log(np.clip(1 - flat, 1e-12, 1))
                )
                report["modes"][mode]["variants"][variant] = {
                    "calibration": {
                        "intercept": round(cal.intercept, 4),
                        "cosine": round(cal.dense, 4),
                        "bm25": round(cal.sparse, 4),
                    },
                    "train_chunks": len(rows),
                    "train_relevant_share": round(float(y.mean()), 4),
                    "train_auc": round(auc(flat, y), 4),
                    "train_log_loss": round(float(loss), 4),
                    "train_floor_sweep": {
                        "none (today)": base,
                        **{str(f): m for f, m in sweep.items()},
                    },
                    "train_best_floor": floors[mode, variant],
                    "train_probability_order_no_floor": split_metrics(
                        train, p_train, qrels["train"], 0.0, True
                    ),
                }
        # One floor for every mode: the lowest of the chosen variants' best floors, unless
        # given (--floor: the shipped default, chosen with the samples check below).
        train_floor = min(floors[mode, CHOSEN[mode]] for mode in MODES)
        floor = args.floor if args.floor is not None else train_floor
        report["train_floor"] = train_floor
        report["floor"] = floor
        for mode in MODES:
            for variant in MODE_VARIANTS[mode]:
                cal, by_p = fitted[mode, variant], BY_PROBABILITY[mode]
                test = runs[mode]["test"]
                p_test = probabilities(test, cal)
                entry = report["modes"][mode]["variants"][variant]
                entry["test"] = {
                    "before": split_metrics(test, p_test, qrels["test"], None, by_p),
                    "after": split_metrics(test, p_test, qrels["test"], floor, by_p),
                    "probability_order_no_floor": split_metrics(
                        test, p_test, qrels["test"], 0.0, True
                    ),
                    "floor_sweep": {
                        str(f): split_metrics(test, p_test, qrels["test"], f, by_p) for f in FLOORS
                    },
                }
                # Another domain (samples/): the best probability each question gets.
                checks: dict[str, Any] = {}
                for label, asked in (("on_topic", SAMPLE_QUESTIONS), ("off_topic", OFF_TOPIC)):
                    got = sample_runs[label, mode]
                    for i, text in enumerate(asked):
                        best = max(
                            (cal.probability(r.dense, r.sparse) for r in got[i]), default=0.0
                        )
                        top = got[i][0] if got[i] else None
                        checks.setdefault(label, {})[text] = {
                            "best_p": round(best, 4),
                            "top_doc": top.doc if top else None,
                            "top_cosine": round(top.dense, 4) if top else None,
                            "top_bm25": round(top.sparse, 4) if top else None,
                        }
                entry["samples"] = checks
                off = [
                    max((cal.probability(r.dense, r.sparse) for r in rows), default=0.0)
                    for rows in scifact_off[mode].values()
                ]
                entry["off_topic_on_scifact"] = {
                    "best_p": dict(
                        zip(elsewhere.values(), [round(p, 4) for p in off], strict=True)
                    ),
                    "questions": len(off),
                    "with_sources_after_floor": sum(p >= floor for p in off),
                    "best_p_max": round(max(off), 4),
                    "best_p_median": round(float(np.median(off)), 4),
                }
                entry["samples_summary"] = {
                    "on_topic_kept": sum(c["best_p"] >= floor for c in checks["on_topic"].values()),
                    "on_topic": len(SAMPLE_QUESTIONS),
                    "off_topic_with_sources": sum(
                        c["best_p"] >= floor for c in checks["off_topic"].values()
                    ),
                    "off_topic": len(OFF_TOPIC),
                }
        report["wall_s"] = round(time.perf_counter() - started, 1)
        return report

    emit_report(asyncio.run(run()), args.out)


if __name__ == "__main__":
    main()
