"""How hits are ranked: the search plan, hybrid fusion, MMR, near-duplicate removal and the
calibrated relevance of a hit (what the relevance floor compares)."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from pipelines.settings import RetrievalSettings
from pipelines.types import DenseQuery, Hit, SearchMode, SparseVector

_RETRIEVAL = RetrievalSettings()  # the defaults live in the settings, once

Scored = tuple[Any, float]  # (point id, score), best first
Query = list[float] | SparseVector
# What a store's queries select (its filters and the caller's document access, in the store's
# terms): the search plan hands it to every candidate query as it is.
W = TypeVar("W")
W_contra = TypeVar("W_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class HybridParams:
    """How dense and sparse candidates are fused (RetrievalSettings has the meaning of each)."""

    fusion: str = _RETRIEVAL.fusion
    dense_weight: float = _RETRIEVAL.dense_weight
    rrf_k: int = _RETRIEVAL.rrf_k
    prefetch: int = _RETRIEVAL.prefetch
    mmr_diversity: float = _RETRIEVAL.mmr_diversity

    @classmethod
    def from_settings(cls, r: RetrievalSettings | None = None) -> HybridParams:
        r = r or _RETRIEVAL
        return cls(
            fusion=r.fusion,
            dense_weight=r.dense_weight,
            rrf_k=r.rrf_k,
            prefetch=r.prefetch,
            mmr_diversity=r.mmr_diversity,
        )

    def depth(self, k: int) -> int:
        """Candidates each side contributes (never fewer than the hits asked for)."""
        return max(self.prefetch, k)

    def mmr_candidates(self, k: int) -> int:
        """MMR picks k from the best few times k candidates."""
        return max(4 * k, 40)


# -- fusion and MMR: computed here so that both Qdrant backends rank exactly alike ----------


def _normalized(scored: Sequence[Scored], how: str) -> dict[Any, float]:
    if not scored:
        return {}
    values = [s for _, s in scored]
    if how == "dbsf":  # Qdrant's distribution-based bounds: mean ± 3 standard deviations
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        lo, hi = mean - 3 * sd, mean + 3 * sd
    else:
        lo, hi = min(values), max(values)
    if hi - lo <= 1e-12:
        return {pid: 1.0 for pid, _ in scored}
    return {pid: (s - lo) / (hi - lo) for pid, s in scored}


def fuse(
    dense: Sequence[Scored],
    sparse: Sequence[Scored],
    params: HybridParams,
    limit: int | None = None,
) -> list[Scored]:
    """One ranking (the best `limit`, or all) from the two candidate lists; a point missing
    from a list scores 0 there.

    Ties go to the better dense rank, then the smaller id. Ids are compared as they are
    (a UUID orders like its canonical string), and only on exact ties: formatting every id
    as a string for the sort key cost ~0.25 ms per hybrid query at 200 + 200 candidates.
    """
    w = params.dense_weight
    fused: dict[Any, float] = {}
    if params.fusion == "rrf":
        for weight, scored in ((w, dense), (1 - w, sparse)):
            for rank, (pid, _) in enumerate(scored):
                fused[pid] = fused.get(pid, 0.0) + weight / (params.rrf_k + rank + 1)
    else:
        for weight, scored in ((w, dense), (1 - w, sparse)):
            for pid, s in _normalized(scored, params.fusion).items():
                fused[pid] = fused.get(pid, 0.0) + weight * s
    dense_rank = {pid: i for i, (pid, _) in enumerate(dense)}
    missing = len(dense)
    keyed = [(-s, dense_rank.get(pid, missing), pid) for pid, s in fused.items()]
    best = sorted(keyed) if limit is None else heapq.nsmallest(limit, keyed)
    return [(pid, -neg) for neg, _, pid in best]


def mmr(
    scored: Sequence[Scored],
    vectors: Mapping[Any, Sequence[float]],
    k: int,
    diversity: float,
) -> list[Scored]:
    """Maximal marginal relevance: trade relevance (scores, min-max scaled) for novelty
    (1 - max cosine to what is already picked); each hit keeps its original score."""
    if diversity <= 0 or len(scored) <= 1:
        return list(scored[:k])
    rel_by_id = _normalized(scored, "convex")
    rel = np.array([rel_by_id[pid] for pid, _ in scored])
    dim = max((len(v) for v in vectors.values()), default=0)
    mat = np.zeros((len(scored), dim), dtype=np.float32)
    for i, (pid, _) in enumerate(scored):
        vec = vectors.get(pid)
        if vec is not None and len(vec) == dim:
            mat[i] = vec
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    closest = np.zeros(len(scored))  # max cosine to the chosen set (negatives count as 0)
    open_ = np.ones(len(scored), dtype=bool)
    chosen: list[Scored] = []
    while open_.any() and len(chosen) < k:
        gain = np.where(open_, (1 - diversity) * rel - diversity * closest, -np.inf)
        pick = int(np.argmax(gain))
        open_[pick] = False
        chosen.append(scored[pick])
        closest = np.maximum(closest, mat @ mat[pick])
    return chosen


def rescore_oversampling(oversampling: float, k: int, depth: int) -> float:
    """Oversampling for a quantized search of `depth` candidates of which k are returned.

    Rescoring with the original vectors protects the final k: it needs `oversampling`·k
    candidates, not `oversampling`·depth. A hybrid side fetching 200 candidates for k = 20
    rescores 200, not 400 (at 1M points the extra fresh reads of original vectors cost
    ~3 ms per query; bench/search.py).
    """
    return max(1.0, min(oversampling, oversampling * k / max(depth, 1)))


# -- the search plan ------------------------------------------------------------------------


class CandidateSource(Protocol, Generic[W_contra]):
    """What ranked_search needs from a store: nearest points for one query vector (dense or
    sparse, the selection inside the vector query) and records by id."""

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: W_contra
    ) -> list[Hit]: ...

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: W_contra
    ) -> list[Scored]: ...

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        """The ranked points with their payloads, in order (points deleted since: skipped)."""
        ...

    async def dense_vectors(
        self, collection: str, ids: Sequence[Any]
    ) -> dict[Any, list[float]]: ...


async def _resolve(dense: DenseQuery) -> list[float]:
    return dense if isinstance(dense, list) else await dense()


def _settle(task: asyncio.Task[Any] | None) -> None:
    """Cancel a side search nobody will wait for, or collect its error (no stray warnings)."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


async def ranked_search(
    source: CandidateSource[W],
    collection: str,
    *,
    dense: DenseQuery | None,
    sparse: SparseVector | None,
    k: int,
    mode: SearchMode,
    filters: W,
    params: HybridParams,
) -> list[Hit]:
    """Dense, sparse or fused hybrid search, optionally diversified (MMR); every hit carries
    its raw cosine and BM25 score where the search has them.

    A plain dense or sparse query returns its payloads directly. Hybrid runs the sparse side
    while the dense query vector is still being computed (`dense` may be an async function),
    then the dense side; the fused best k fetch their payloads. At 1M points on 2 cores the
    overlap took 2–3 ms off a hybrid query (docs/benchmarks.md). A sparse search given a
    dense query too ranks by BM25 alone and computes its hits' cosines afterwards.
    """
    dense_q = dense if mode in ("dense", "hybrid") else None
    sparse_q = sparse if sparse is not None and sparse.indices and mode != "dense" else None
    cosines = dense if mode == "sparse" and sparse_q is not None else None
    mmr_on = params.mmr_diversity > 0
    if mode != "hybrid" and not mmr_on and cosines is None:
        if dense_q is not None:
            found = await source.nearest_hits(
                collection, await _resolve(dense_q), limit=k, filters=filters
            )
            return [replace(h, dense_score=h.score) for h in found]
        if sparse_q is not None:
            found = await source.nearest_hits(collection, sparse_q, limit=k, filters=filters)
            return [replace(h, sparse_score=h.score) for h in found]
        return []
    single = params.mmr_candidates(k) if mmr_on else k
    depth = params.depth(k) if mode == "hybrid" else single
    # The query's embedding starts first: once its worker thread is inside the inference
    # engine (which releases the GIL), the sparse search runs beside it. qdrant-edge 0.9
    # holds the GIL for a whole search, so started first it would stall the embedding.
    embedding = dense_q if dense_q is not None else cosines
    dense_side = asyncio.ensure_future(_resolve(embedding)) if embedding is not None else None
    sparse_side = None
    vector: list[float] | None = None
    try:
        if sparse_q is not None:
            await asyncio.sleep(0)  # the embedding task reaches its worker thread
            sparse_side = asyncio.ensure_future(
                source.nearest_ids(collection, sparse_q, limit=depth, k=k, filters=filters)
            )
        dense_ids: list[Scored] = []
        if dense_side is not None:
            vector = await dense_side
        if dense_q is not None and vector is not None:
            dense_ids = await source.nearest_ids(
                collection, vector, limit=depth, k=k, filters=filters
            )
        sparse_ids = await sparse_side if sparse_side is not None else []
    finally:
        _settle(dense_side)
        _settle(sparse_side)
    keep = params.mmr_candidates(k) if mmr_on else k
    if mode == "hybrid" and dense_q is not None and sparse_q is not None:
        ranked = fuse(dense_ids, sparse_ids, params, limit=keep)
    else:  # one side only (e.g. hybrid with no known query term)
        ranked = (dense_ids if dense_q is not None else sparse_ids)[:keep]
    vectors: Mapping[Any, Sequence[float]] = {}
    if mmr_on:
        vectors = await source.dense_vectors(collection, [pid for pid, _ in ranked])
        ranked = mmr(ranked, vectors, k, params.mmr_diversity)
    ranked = ranked[:k]
    if not ranked:
        return []
    sides = Sides(dense_ids, sparse_ids, depth)
    if vector is not None:
        await sides.add_cosines(source, collection, vector, [pid for pid, _ in ranked], vectors)
    return await sides.hits(source, collection, ranked)


class Sides:
    """The raw cosine and BM25 score of each ranked point (the calibration's features), from
    the candidate lists. A point missing from a full list scores at most that list's last
    score there, and gets that bound; missing from a shorter one (which listed every match),
    0. Cosines missing from the dense list can be computed exactly (`add_cosines`)."""

    def __init__(self, dense: Sequence[Scored], sparse: Sequence[Scored], depth: int) -> None:
        def bound(scored: Sequence[Scored]) -> float | None:
            return (scored[-1][1] if len(scored) >= depth else 0.0) if scored else None

        self.dense, self.dense_bound = dict(dense), bound(dense)
        self.sparse, self.sparse_bound = dict(sparse), bound(sparse)

    async def add_cosines(
        self,
        source: CandidateSource[Any],
        collection: str,
        query: Sequence[float],
        ids: Sequence[Any],
        known: Mapping[Any, Sequence[float]],
    ) -> None:
        missing = [pid for pid in ids if pid not in self.dense]
        if not missing:
            return
        fetched = {pid: known[pid] for pid in missing if pid in known}
        if len(fetched) < len(missing):
            rest = [pid for pid in missing if pid not in fetched]
            fetched.update(await source.dense_vectors(collection, rest))
        q = np.asarray(query, dtype=np.float64)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        for pid, vec in fetched.items():
            v = np.asarray(vec, dtype=np.float64)
            if v.shape == q.shape:
                self.dense[pid] = float(v @ q) / max(float(np.linalg.norm(v)), 1e-12)

    async def hits(
        self, source: CandidateSource[Any], collection: str, ranked: Sequence[Scored]
    ) -> list[Hit]:
        """The ranked points with their payloads and side scores, in order."""
        # The backends return hits in the order asked, skipping points deleted meanwhile:
        # asked with its rank as its score, each hit says which ranked point it is.
        asked = [(pid, float(i)) for i, (pid, _) in enumerate(ranked)]
        out = []
        for hit in await source.hits(collection, asked):
            pid, score = ranked[int(hit.score)]
            dense = self.dense.get(pid, self.dense_bound)
            sparse = self.sparse.get(pid, self.sparse_bound)
            out.append(replace(hit, score=score, dense_score=dense, sparse_score=sparse))
        return out


@dataclass(frozen=True, slots=True)
class Calibration:
    """A hit's probability of relevance, a logistic function of its absolute scores:
    1 / (1 + exp(-(intercept + dense·cosine + sparse·BM25 + rerank·reranker score))).

    A score the search did not compute counts as 0 (a sparse side that matched no query term
    scores 0); each mode's fit gives weight only to the scores that mode has.
    """

    intercept: float
    dense: float = 0.0
    sparse: float = 0.0
    rerank: float = 0.0

    @classmethod
    def of(cls, params: tuple[float, float, float]) -> Calibration:
        """From a mode's settings: (intercept, cosine weight, BM25 weight)."""
        intercept, dense, sparse = params
        return cls(intercept, dense=dense, sparse=sparse)

    @classmethod
    def of_reranker(cls, params: tuple[float, float]) -> Calibration:
        """From the reranker's settings: (intercept, weight of its score)."""
        intercept, rerank = params
        return cls(intercept, rerank=rerank)

    def probability(
        self, dense: float | None, sparse: float | None, rerank: float | None = None
    ) -> float:
        z = self.intercept
        z += self.dense * (dense or 0.0) + self.sparse * (sparse or 0.0)
        z += self.rerank * (rerank or 0.0)
        if z < -700:  # exp overflows past ~709; the probability is 0 to double precision
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))


def above_floor(
    hits: Sequence[Hit], relevance: Sequence[float], floor: float, *, by_relevance: bool
) -> list[Hit]:
    """The hits whose probability of relevance clears the floor, each with that probability
    as its score (what the sources and search hits show): in their order, or, `by_relevance`,
    most probable first (ties in their order)."""
    kept = [replace(hit, score=p) for hit, p in zip(hits, relevance, strict=True) if p >= floor]
    if by_relevance:
        kept.sort(key=lambda hit: -hit.score)  # stable
    return kept


# -- near-duplicate removal -----------------------------------------------------------------

Shingles = set[int]


def _shingles(text: str) -> Shingles:
    """Hashes of the word 3-grams (ints: no tuples left for the garbage collector to track)."""
    words = text.lower().split()
    if len(words) < 3:
        words += [""] * (3 - len(words))
    return set(map(hash, zip(words, words[1:], words[2:], strict=False)))


_SKETCH = 16  # bottom-k hashes per text: near-identical texts share most of them


def _bottom(hashes: Shingles) -> list[int]:
    """The _SKETCH smallest hashes (numpy's partition: half the time of heapq.nsmallest)."""
    if len(hashes) <= _SKETCH:
        return list(hashes)
    values = np.fromiter(hashes, dtype=np.int64, count=len(hashes))
    smallest: list[int] = np.partition(values, _SKETCH - 1)[:_SKETCH].tolist()
    return smallest


def dedupe_hits(hits: Sequence[Hit], similarity: float, limit: int | None = None) -> list[Hit]:
    """Keep the first (best) of near-identical chunks: word 3-shingle Jaccard >= similarity.

    Only hits sharing a quarter of their bottom-k shingle hashes with a kept one are compared
    exactly, so the cost grows linearly with the hits. Stops once `limit` hits are kept.
    """
    kept: list[Hit] = []
    seen: list[Shingles] = []
    by_hash: dict[int, list[int]] = {}
    for hit in hits:
        if limit is not None and len(kept) >= limit:
            break
        sh = _shingles(hit.text)
        sketch = _bottom(sh)
        shared_hashes: dict[int, int] = {}
        for h in sketch:
            for i in by_hash.get(h, ()):
                shared_hashes[i] = shared_hashes.get(i, 0) + 1
        duplicate = False
        for i, count in shared_hashes.items():
            if count * 4 < len(sketch):
                continue
            other = seen[i]
            shared = len(sh & other)
            if shared >= similarity * (len(sh) + len(other) - shared):
                duplicate = True
                break
        if not duplicate:
            for h in sketch:
                by_hash.setdefault(h, []).append(len(seen))
            kept.append(hit)
            seen.append(sh)
    return kept
