"""Retrieval: embed the query (dense + sparse), search the store; a LangChain retriever on top."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from pipelines.access import Access
from pipelines.errors import InvalidInput
from pipelines.microbatch import BatchStats, MicroBatcher
from pipelines.ports import Embedder, Reranker, SparseEncoder, VectorStore
from pipelines.ranking import Calibration, above_floor, dedupe_hits
from pipelines.settings import EmbeddingSettings, RetrievalSettings
from pipelines.telemetry import NO_TELEMETRY, Telemetry
from pipelines.types import Filters, Hit, SearchMode

_DEFAULTS = RetrievalSettings()
_BATCHING = EmbeddingSettings()


class RetrievalService:
    """Query → ranked chunks. Knows nothing of HTTP; used by the API, the CLI and the chain.

    Candidates come from the store (dense, sparse or fused hybrid, filters inside the vector
    query); an optional cross-encoder reorders the best `rerank_candidates`; near-identical
    chunks are dropped; hits whose probability of relevance (`Calibration`, per mode, from
    their absolute scores) is below the relevance floor are dropped, and that probability is
    the score of the best k returned. Concurrent searches share their model calls: query
    embeddings go through one micro-batcher, reranks through another (one model call at a
    time between them, as each uses every core).

    Each search is reported to `telemetry` (attachable after construction) by phase: `embed`
    is the query's vectors as the search waited for them (the BM25 encoding, and the dense
    embedding including its wait for a batch); `search` the store's own time, the wait for
    the embedding taken out (in hybrid mode the sparse search runs during the embedding, so
    that overlapped part counts under `embed`: the phases add up to the wall time instead of
    counting it twice); `rerank`; `total`. Then the hits returned, and each model call's
    batch size.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        *,
        default_k: int = _DEFAULTS.k,
        max_k: int = _DEFAULTS.max_k,
        default_mode: SearchMode = _DEFAULTS.mode,
        reranker: Reranker | None = None,
        rerank_candidates: int = _DEFAULTS.rerank_candidates,
        dedupe: bool = _DEFAULTS.dedupe,
        dedupe_similarity: float = _DEFAULTS.dedupe_similarity,
        relevance_floor: float = _DEFAULTS.relevance_floor,
        calibrations: dict[SearchMode, Calibration] | None = None,
        rerank_calibration: Calibration | None = None,
        query_batch_max: int = _BATCHING.query_batch_max,
        query_batch_wait_ms: float = _BATCHING.query_batch_wait_ms,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.default_k = default_k
        self.max_k = max_k
        self.default_mode: SearchMode = default_mode
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.dedupe = dedupe
        self.dedupe_similarity = dedupe_similarity
        self.relevance_floor = relevance_floor
        self.calibrations = calibrations or calibrations_of(_DEFAULTS)
        self.rerank_calibration = rerank_calibration or Calibration.of_reranker(
            _DEFAULTS.calibration_rerank
        )
        limiter = anyio.CapacityLimiter(1)  # one model call at a time: each uses every core
        self._queries = MicroBatcher(
            embedder.embed_queries,
            max_batch=query_batch_max,
            max_wait_ms=query_batch_wait_ms,
            limiter=limiter,
            name="query embeddings",
            kind="query",
        )
        self._reranks = (
            MicroBatcher(
                reranker.score_batch,
                max_batch=query_batch_max,
                max_wait_ms=query_batch_wait_ms,
                limiter=limiter,
                name="reranks",
                kind="rerank",
            )
            if reranker is not None
            else None
        )
        self.telemetry = telemetry

    @property
    def telemetry(self) -> Telemetry:
        """Who measures the searches (and the micro-batchers' calls)."""
        return self._telemetry

    @telemetry.setter
    def telemetry(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._queries.telemetry = telemetry
        if self._reranks is not None:
            self._reranks.telemetry = telemetry

    @classmethod
    def from_settings(
        cls,
        settings: RetrievalSettings,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        reranker: Reranker | None = None,
        *,
        batching: EmbeddingSettings = _BATCHING,
    ) -> RetrievalService:
        return cls(
            store,
            embedder,
            sparse,
            default_k=settings.k,
            max_k=settings.max_k,
            default_mode=settings.mode,
            reranker=reranker,
            rerank_candidates=settings.rerank_candidates,
            dedupe=settings.dedupe,
            dedupe_similarity=settings.dedupe_similarity,
            relevance_floor=settings.relevance_floor,
            calibrations=calibrations_of(settings),
            rerank_calibration=Calibration.of_reranker(settings.calibration_rerank),
            query_batch_max=batching.query_batch_max,
            query_batch_wait_ms=batching.query_batch_wait_ms,
        )

    @property
    def query_batches(self) -> BatchStats:
        """Embedder calls made for queries and their sizes."""
        return self._queries.stats

    @property
    def rerank_batches(self) -> BatchStats | None:
        """Reranker calls made and their sizes (in queries); None without a reranker."""
        return self._reranks.stats if self._reranks is not None else None

    async def search(
        self,
        query: str,
        collection: str,
        *,
        access: Access,
        k: int | None = None,
        mode: SearchMode | None = None,
        filters: Filters | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The best k chunks the caller (`access`) may read whose probability of relevance
        is at least `min_score` (None: the relevance floor; 0: every hit), that probability
        as their score; the store checks the collection and selects the documents inside the
        vector query."""
        if not query.strip():
            raise InvalidInput("query is empty")
        k = k or self.default_k
        if k > self.max_k:
            raise InvalidInput(f"k={k} is above the limit of {self.max_k}")
        mode = mode or self.default_mode
        began = time.perf_counter()
        # The store checks the collection, and awaits the embedding when it needs it (hybrid:
        # after starting the sparse side).
        embedding_s: list[float] = []
        # A sparse search embeds the query too when its calibration reads the hits' cosines.
        cosines = mode == "sparse" and self.calibrations["sparse"].dense != 0
        dense = (
            partial(self._embed_query, query, embedding_s)
            if mode in ("dense", "hybrid") or cosines
            else None
        )
        sparse = self.sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        encoded = time.perf_counter()
        fetch = max(k, self.rerank_candidates) if self.reranker is not None else k
        if self.dedupe:
            fetch += min(k, 20)  # room for the duplicates dropped below
        hits = await self.store.search(
            collection,
            dense=dense,
            sparse=sparse,
            k=fetch,
            mode=mode,
            access=access,
            filters=filters,
        )
        searched = time.perf_counter()
        reranked, rerank_scores = searched, list[float]()
        if self._reranks is not None and hits:
            hits, rerank_scores = await self._rerank(self._reranks, query, hits)
            reranked = time.perf_counter()
        floor = self.relevance_floor if min_score is None else min_score
        # Ranked by the probability where that ranks at least as well as the search's own
        # order (dense: the same order; sparse: better, the cosine helps), by the fused score
        # in hybrid mode, by the reranker's when there is one (SciFact; docs/benchmarks.md).
        by_relevance = mode != "hybrid" and not rerank_scores
        relevance = self.relevance(hits, mode, rerank_scores)
        hits = above_floor(hits, relevance, floor, by_relevance=by_relevance)
        if self.dedupe:
            hits = dedupe_hits(hits, self.dedupe_similarity, limit=k)
        hits = hits[:k]
        telemetry, embedded = self._telemetry, sum(embedding_s)
        telemetry.retrieval_phase(mode, "embed", encoded - began + embedded)
        telemetry.retrieval_phase(mode, "search", max(0.0, searched - encoded - embedded))
        if reranked > searched:
            telemetry.retrieval_phase(mode, "rerank", reranked - searched)
        telemetry.retrieval_phase(mode, "total", time.perf_counter() - began)
        telemetry.retrieval_hits(collection, mode, len(hits))
        return hits

    def relevance(
        self, hits: Sequence[Hit], mode: SearchMode, rerank_scores: Sequence[float] = ()
    ) -> list[float]:
        """Each hit's probability of relevance: the reranker's calibration for the reranked
        head (`rerank_scores`, in order), the mode's for the rest."""
        by_mode, by_reranker = self.calibrations[mode], self.rerank_calibration
        head = [by_reranker.probability(None, None, s) for s in rerank_scores]
        tail = hits[len(head) :]
        return head + [by_mode.probability(h.dense_score, h.sparse_score) for h in tail]

    async def _embed_query(self, query: str, spent: list[float]) -> list[float]:
        began = time.perf_counter()
        try:
            return await self._queries.submit(query)
        finally:
            spent.append(time.perf_counter() - began)

    async def _rerank(
        self,
        reranks: MicroBatcher[tuple[str, Sequence[str]], list[float]],
        query: str,
        hits: list[Hit],
    ) -> tuple[list[Hit], list[float]]:
        """The hits with the reranked head first, and the head's reranker scores in order."""
        head, tail = hits[: self.rerank_candidates], hits[self.rerank_candidates :]
        scores = await reranks.submit((query, [h.text for h in head]))
        order = sorted(range(len(head)), key=lambda i: scores[i], reverse=True)
        reranked = [replace(head[i], score=scores[i]) for i in order]
        # Below the reranked head, keep the store's order (their scores are on another scale).
        return reranked + tail, [scores[i] for i in order]


def calibrations_of(settings: RetrievalSettings) -> dict[SearchMode, Calibration]:
    """Each search mode's calibration, from the settings."""
    return {
        "dense": Calibration.of(settings.calibration_dense),
        "sparse": Calibration.of(settings.calibration_sparse),
        "hybrid": Calibration.of(settings.calibration_hybrid),
    }


def hit_to_document(hit: Hit) -> Document:
    """The one conversion between the store port and LangChain: the chunk text becomes the
    page content; its payload, score and chunk id the metadata."""
    metadata = {k: v for k, v in hit.payload.items() if k != "text"}
    metadata["score"] = hit.score
    metadata["chunk_id"] = hit.chunk_id
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)


class StoreRetriever(BaseRetriever):
    """LangChain retriever over the store port; per-call `collection`, `k`, `mode`, `filters`.
    `access` is the caller's, fixed when the retriever is made (no per-call override)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: RetrievalService
    access: Access
    collection: str = "default"
    k: int | None = None
    mode: SearchMode | None = None
    filters: Filters | None = None
    min_score: float | None = None  # None: the service's relevance floor

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        raise NotImplementedError("StoreRetriever is async-only: use ainvoke()")

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = await self.service.search(
            query,
            kwargs.get("collection", self.collection),
            access=self.access,
            k=kwargs.get("k", self.k),
            mode=kwargs.get("mode", self.mode),
            filters=kwargs.get("filters", self.filters),
            min_score=kwargs.get("min_score", self.min_score),
        )
        return [hit_to_document(h) for h in hits]
