"""The throw-away index and answerer a `rag eval` run scores: the product's own ingest,
retrieval and chain over a corpus, deleted afterwards."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress

from app.cli.console import IngestBar, console
from pipelines.access import FULL_ACCESS
from pipelines.settings import Settings
from pipelines.types import Hit, SearchMode

if TYPE_CHECKING:
    from pipelines.evaluation import AnswerFn
    from pipelines.ports import Generator
    from pipelines.retrieval import RetrievalService


@dataclass(slots=True)
class EvalIndex:
    """A corpus ingested through the product's ingest job into a collection of its own."""

    retrieval: RetrievalService
    collection: str
    documents: int
    chunks: int
    ingest_s: float

    async def search(self, text: str, k: int, mode: SearchMode | None) -> list[Hit]:
        return await self.retrieval.search(
            text, self.collection, access=FULL_ACCESS, k=k, mode=mode
        )


@asynccontextmanager
async def throwaway_index(
    settings: Settings,
    corpus_file: Path,
    *,
    chunking: bool,
    progress: Progress,
) -> AsyncIterator[EvalIndex]:
    """Ingest `corpus_file` (jsonl) with the product's pipeline, embedder and sparse encoder;
    everything is deleted on exit (a temp Qdrant Edge dir, or a uniquely named collection on
    a configured Qdrant server)."""
    from ingest.chunking import Chunker
    from ingest.job import build_pipeline
    from pipelines.core import build_core

    async with AsyncExitStack() as stack:
        if settings.qdrant.url:
            core_settings = settings
            collection = f"eval-{uuid.uuid4().hex[:12]}"
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-eval-")))
            core_settings = _store_in(settings, tmp)
            collection = "eval"
        core = build_core(core_settings)
        stack.push_async_callback(core.close)
        stack.push_async_callback(core.store.drop_collection, collection)
        # Without chunking each document is one point, truncated by the embedder as the
        # model's own benchmarks do (BM25 still sees the whole text).
        chunker = None if chunking else Chunker(core.embedder.count_tokens, 1 << 30, 0)
        pipeline = build_pipeline(core, chunker=chunker)
        started = time.perf_counter()
        summary = await pipeline.run(
            [corpus_file], collection, progress=IngestBar(progress, files=False)
        )
        if summary.failed:
            first = summary.failed[0]
            console.print(
                f"[yellow]warning[/]: {len(summary.failed)} corpus lines failed to load "
                f"(first: {first['source']}: {first['reason']})"
            )
        yield EvalIndex(
            retrieval=core.retrieval,
            collection=collection,
            documents=summary.added + summary.updated + summary.unchanged,
            chunks=summary.chunks,
            ingest_s=round(time.perf_counter() - started, 2),
        )


def _store_in(settings: Settings, data_dir: Path) -> Settings:
    """The settings with the embedded store under `data_dir`; the embedder's ONNX export
    stays cached under the real data dir (not exported again for every run)."""
    embedding = settings.embedding.model_copy(update={"cache_dir": settings.embedding_cache_dir})
    return settings.model_copy(update={"data_dir": data_dir, "embedding": embedding})


async def open_answerer(
    settings: Settings,
    index: EvalIndex,
    stack: AsyncExitStack,
    mode: SearchMode | None,
    bar: Progress,
) -> AnswerFn:
    """The product's RAG chain over the throw-away index, with the configured generator
    (closed with `stack`)."""
    from pipelines.generators import build_generator

    starting = bar.add_task("starting the generator", total=None)
    generator = await build_generator(settings)
    stack.push_async_callback(generator.close)
    bar.update(starting, visible=False)
    return make_answerer(settings, index, generator, mode)


def make_answerer(
    settings: Settings,
    index: EvalIndex,
    generator: Generator,
    mode: SearchMode | None,
    *,
    max_tokens: int | None = None,
) -> AnswerFn:
    """Answers through the product's RAG chain over the index, with the settings' citations
    (the prompt variant among them): each answer's shown sources with their corpus ids, and
    the chain's verified citations (None with citations off: read from the text)."""
    from pipelines.chain import AskInput, RagChain
    from pipelines.evaluation import CitationCheck, GeneratedAnswer
    from pipelines.types import ChatMessage

    chain = RagChain(
        index.retrieval, generator, rewrite_followups=False, citations=settings.citations
    )

    async def answer(question: str) -> GeneratedAnswer:
        ask = AskInput(
            messages=[ChatMessage("user", question)],
            collection=index.collection,
            access=FULL_ACCESS,
            mode=mode,
            max_tokens=max_tokens or settings.llm.max_tokens,
            temperature=0.0,
        )
        answered = await chain.answer(ask)
        text = await answered.collect()
        checks, invalid = None, 0
        if settings.citations.enabled:
            report = await answered.settle()
            checks = [CitationCheck(c.n, c.supported) for c in report.citations]
            invalid = report.invalid
        return GeneratedAnswer(
            text=text,
            sources=[s.text for s in answered.sources],
            source_docs=[str(s.document.metadata.get("external_id", "")) for s in answered.sources],
            citations=checks,
            invalid_markers=invalid,
        )

    return answer
