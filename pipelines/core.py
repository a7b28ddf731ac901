"""The composition root: the embedder, store, sparse encoder and retrieval the settings describe.

Every entry point (the service's lifespan, each CLI command, the ingest job, the evaluation
harness, the benchmarks and the test fixtures) builds its core here instead of wiring the
adapters by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pipelines.ports import Embedder, SparseEncoder, VectorStore
from pipelines.retrieval import RetrievalService
from pipelines.settings import Settings


@dataclass(frozen=True, slots=True)
class Core:
    """The long-lived parts one process searches and ingests with."""

    settings: Settings
    embedder: Embedder
    store: VectorStore
    sparse: SparseEncoder
    retrieval: RetrievalService

    async def close(self) -> None:
        await self.store.close()


def build_core(settings: Settings, *, embedder: Embedder | None = None) -> Core:
    """Build (not yet open) the core. `embedder`: reuse one already loaded (tests load the
    model once per session; the evaluation harness shares it between indexes)."""
    from pipelines.embedder import build_embedder
    from pipelines.rerank import build_reranker
    from pipelines.sparse import QdrantBm25Encoder
    from pipelines.stores import build_store

    embedder = embedder or build_embedder(settings)
    store = build_store(settings, dim=embedder.dim, embedding_model=embedder.name)
    sparse = QdrantBm25Encoder.from_settings(settings.retrieval)
    retrieval = RetrievalService.from_settings(
        settings.retrieval,
        store,
        embedder,
        sparse,
        reranker=build_reranker(settings.retrieval, device=settings.embedding.device),
        batching=settings.embedding,
    )
    return Core(
        settings=settings, embedder=embedder, store=store, sparse=sparse, retrieval=retrieval
    )


@asynccontextmanager
async def open_core(settings: Settings, *, embedder: Embedder | None = None) -> AsyncIterator[Core]:
    """The core for the length of a block; the store is closed on the way out."""
    core = build_core(settings, embedder=embedder)
    try:
        yield core
    finally:
        await core.close()
