"""Choose the hybrid retrieval defaults on a BEIR train split; report them once on test.

Reproduces the product's path in numpy: the product chunker and embedder (vectors cached
once under --cache), Qdrant's BM25 analyzer (term counts read back from `Bm25`) with the
store's IDF (ln(1 + (N - n + 0.5) / (n + 0.5)) over chunks), each side's top `prefetch`
chunks, normalized fusion as pipelines.ranking.fuse does it, documents scored by their
best chunk. Every grid point is scored on the train split only; the best one is then
evaluated on test. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipelines.evaluation import Qrels, load_beir  # noqa: E402

Matrix = Any  # numpy arrays; kept loose for brevity


def _embed(dataset: Path, cache: Path) -> dict[str, Any]:
    if cache.is_file():
        z = np.load(cache, allow_pickle=True)
        return {k: z[k] for k in z.files}
    from ingest.job import build_chunker
    from ingest.loaders import load_jsonl
    from pipelines.embedder import build_embedder
    from pipelines.settings import Settings

    settings = Settings(_env_file=None)
    embedder = build_embedder(settings)
    chunker = build_chunker(settings, embedder)
    texts, owner, doc_ids = [], [], []
    for doc in load_jsonl(dataset / "corpus.jsonl", []):
        doc_ids.append(doc.metadata["external_id"])
        for piece in chunker.split(doc):
            texts.append(piece.text)
            owner.append(len(doc_ids) - 1)
    rows = [json.loads(x) for x in (dataset / "queries.jsonl").open() if x.strip()]
    data = {
        "chunk_text": np.array(texts, dtype=object),
        "chunk_doc": np.array(owner),
        "doc_ids": np.array(doc_ids, dtype=object),
        "qids": np.array([str(r["_id"]) for r in rows], dtype=object),
        "qtext": np.array([r["text"] for r in rows], dtype=object),
        "Q": np.array(embedder.embed_queries([r["text"] for r in rows]), dtype=np.float32),
        "C": np.array(embedder.embed_documents(texts), dtype=np.float32),
        "backend": np.array(getattr(embedder, "backend", "torch")),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    return data


def _term_counts(texts: list[str], query: bool, vocab: dict[int, int]) -> Matrix:
    """Raw term counts per text from Qdrant's analyzer (k huge, b = 0: weight == count)."""
    from qdrant_edge import Bm25, Bm25Config

    bm25 = Bm25(Bm25Config(k=1e7, b=0.0))
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        vec = bm25.embed_query(text) if query else bm25.embed_document(text)
        for idx, val in zip(vec.indices, vec.values, strict=True):
            rows.append(i)
            cols.append(vocab.setdefault(int(idx), len(vocab)))
            vals.append(1.0 if query else round(float(val)))
    return rows, cols, vals


def _bm25(tf: Matrix, qb: Matrix, k1: float, b: float, avg_len: float) -> Matrix:
    dl = np.asarray(tf.sum(1)).ravel()
    coo = tf.tocoo()
    weight = coo.data * (k1 + 1) / (coo.data + k1 * (1 - b + b * dl[coo.row] / avg_len))
    df = np.bincount(coo.col, minlength=tf.shape[1])
    idf = np.log(1 + (tf.shape[0] - df + 0.5) / (df + 0.5))
    w = sp.csr_matrix((weight * idf[coo.col], (coo.row, coo.col)), shape=tf.shape)
    return (qb @ w.T).toarray().astype(np.float32)


def _top_mask(s: Matrix, n: int, matching_only: bool) -> Matrix:
    """Each row's top n; a sparse query returns only chunks sharing a term (score > 0)."""
    idx = np.argpartition(-s, n, axis=1)[:, :n]
    mask = np.zeros_like(s, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask & (s > 0) if matching_only else mask


def _normalize(s: Matrix, mask: Matrix, how: str) -> Matrix:
    masked = np.where(mask, s, np.nan)
    if how == "dbsf":
        mean, sd = np.nanmean(masked, 1, keepdims=True), np.nanstd(masked, 1, keepdims=True)
        lo, hi = mean - 3 * sd, mean + 3 * sd
    else:
        lo, hi = np.nanmin(masked, 1, keepdims=True), np.nanmax(masked, 1, keepdims=True)
    return np.where(mask, (s - lo) / np.maximum(hi - lo, 1e-12), 0.0)


def _ndcg(
    doc_scores: Matrix, rows: list[int], qrels: Qrels, doc_index: dict[str, int]
) -> dict[str, float]:
    from pipelines.evaluation import evaluate_rankings

    rankings = {}
    for qid, row in zip(qrels, rows, strict=True):
        s = doc_scores[row]
        top = np.argpartition(-s, 100)[:100]
        top = top[np.argsort(-s[top], kind="stable")]
        rankings[qid] = [str(i) for i in top if np.isfinite(s[i]) and s[i] > -1]
    mapped = {
        q: {str(doc_index[d]): g for d, g in rel.items() if d in doc_index}
        for q, rel in qrels.items()
    }
    return evaluate_rankings(rankings, mapped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/scifact")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/ragserve-tune/vectors.npz"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    data = _embed(args.dataset, args.cache)
    vocab: dict[int, int] = {}
    r, c, v = _term_counts(list(data["chunk_text"]), False, vocab)
    n_chunks = len(data["chunk_text"])
    qr, qc, qv = _term_counts(list(data["qtext"]), True, vocab)
    tf = sp.csr_matrix((v, (r, c)), shape=(n_chunks, len(vocab)))
    qb_all = sp.csr_matrix((qv, (qr, qc)), shape=(len(data["qids"]), len(vocab)))
    starts = np.flatnonzero(np.r_[True, np.diff(data["chunk_doc"]) != 0])
    doc_index = {str(d): i for i, d in enumerate(data["doc_ids"])}
    qrow = {str(q): i for i, q in enumerate(data["qids"])}

    def split(name: str) -> tuple[Qrels, list[int]]:
        qrels = load_beir(args.dataset, name).qrels
        qrels = {q: rel for q, rel in qrels.items() if q in qrow}
        return qrels, [qrow[q] for q in qrels]

    def fused_docs(dense: Matrix, sparse: Matrix, cfg: dict[str, Any]) -> Matrix:
        md = _top_mask(dense, cfg["prefetch"], False)
        ms = _top_mask(sparse, cfg["prefetch"], True)
        w, how = cfg["dense_weight"], cfg["fusion"]
        fused = w * _normalize(dense, md, how) + (1 - w) * _normalize(sparse, ms, how)
        fused = np.where(md | ms, fused, -np.inf)
        return np.maximum.reduceat(fused, starts, axis=1)

    def run(rows: list[int], qrels: Qrels, cfg: dict[str, Any]) -> dict[str, float]:
        dense = data["Q"][rows] @ data["C"].T
        sparse = _bm25(tf, qb_all[rows], cfg["k1"], cfg["b"], cfg["avg_len"])
        return _ndcg(fused_docs(dense, sparse, cfg), rows, qrels, doc_index)

    train, train_rows = split("train")
    dense_train = data["Q"][train_rows] @ data["C"].T
    scored: list[tuple[float, dict[str, Any]]] = []
    for k1, b, avg_len in itertools.product(
        (0.6, 0.9, 1.2, 1.6, 2.0), (0.3, 0.5, 0.75, 0.9), (64.0, 128.0, 256.0)
    ):
        sparse_train = _bm25(tf, qb_all[train_rows], k1, b, avg_len)
        for n, how, w in itertools.product(
            (100, 200), ("convex", "dbsf"), (0.4, 0.45, 0.5, 0.55, 0.6)
        ):
            cfg = {"k1": k1, "b": b, "avg_len": avg_len, "prefetch": n, "fusion": how}
            cfg["dense_weight"] = w
            docs = fused_docs(dense_train, sparse_train, cfg)
            scored.append((_ndcg(docs, train_rows, train, doc_index)["ndcg@10"], cfg))
        top = max(scored, key=lambda x: x[0])
        print(f"bm25 {k1} {b} {avg_len}: best so far {top}", file=sys.stderr, flush=True)
    scored.sort(key=lambda x: x[0], reverse=True)
    best = scored[0][1]
    test, test_rows = split("test")
    report = {
        "chosen_on_train": best,
        "train": run(train_rows, train, best),
        "test": run(test_rows, test, best),
        "top10_train": [{"ndcg@10": round(s, 4), **cfg} for s, cfg in scored[:10]],
        "backend": str(data["backend"]),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
