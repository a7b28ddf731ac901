"""Wiring for one ingest run: build the embedder, store and pipeline from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ingest.chunking import Chunker
from ingest.pipeline import IngestPipeline
from pipelines.embedder import build_embedder
from pipelines.ports import Embedder, VectorStore
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores import build_store


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    # The model adds [CLS]/[SEP]: two of its positions are not text.
    size = min(settings.chunking.chunk_tokens, embedder.max_tokens - 2)
    return Chunker(embedder.count_tokens, size, settings.chunking.overlap_tokens)


def build_pipeline(
    settings: Settings, store: VectorStore, embedder: Embedder, *, serving: bool = False
) -> IngestPipeline:
    """The ingest job over these parts. `serving`: inside the query service (uploads), where
    each embedding batch holds the embedder that queries also wait for: batches stay small."""
    batch = settings.embedding.batch_size
    return IngestPipeline(
        store,
        embedder,
        QdrantBm25Encoder.from_settings(settings.retrieval),
        build_chunker(settings, embedder),
        batch_size=batch if serving else max(batch * 4, 64),
    )


@asynccontextmanager
async def open_pipeline(settings: Settings) -> AsyncIterator[IngestPipeline]:
    embedder = build_embedder(settings)
    store = build_store(settings, dim=embedder.dim, embedding_model=embedder.name)
    try:
        yield build_pipeline(settings, store, embedder)
    finally:
        await store.close()
