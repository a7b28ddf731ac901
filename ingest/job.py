"""Wiring for one ingest run: the chunker and the ingest pipeline over a core's parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ingest.chunking import Chunker
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline
from pipelines.core import Core, open_core
from pipelines.ports import Embedder
from pipelines.settings import Settings


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    # The model adds [CLS]/[SEP]: two of its positions are not text.
    size = min(settings.chunking.chunk_tokens, embedder.max_tokens - 2)
    return Chunker(embedder.count_tokens, size, settings.chunking.overlap_tokens)


def build_pipeline(
    core: Core, *, serving: bool = False, chunker: Chunker | None = None
) -> IngestPipeline:
    """The ingest job over the core's store, embedder and sparse encoder. `serving`: inside
    the query service (uploads), where each embedding batch holds the embedder that queries
    also wait for: batches stay small. `chunker`: another chunking (the evaluation harness's
    one point per document). Each stored file is kept under the data dir
    (`RAG_KEEP_ORIGINALS`)."""
    batch = core.settings.embedding.batch_size
    return IngestPipeline(
        core.store,
        core.embedder,
        core.sparse,
        chunker or build_chunker(core.settings, core.embedder),
        batch_size=batch if serving else max(batch * 4, 64),
        originals=Originals.of(core.settings),
    )


@asynccontextmanager
async def open_pipeline(settings: Settings) -> AsyncIterator[IngestPipeline]:
    """The ingest job of a `rag ingest` run; its store is closed on the way out."""
    async with open_core(settings) as core:
        yield build_pipeline(core)
