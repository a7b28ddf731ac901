"""Concurrent searches share query-embedding calls of the real model, and get the vectors
(and hits) one query at a time gives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from pipelines.access import FULL_ACCESS
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from pipelines.types import Hit
from tests.support.seeds import ingest_samples

pytestmark = pytest.mark.slow

WAIT_S = 120.0
TOPICS = ["Venus", "Jupiter's storms", "the Moon", "comets", "solar wind", "Mars", "rings", "Sun"]
# Mixed lengths, so a batch pads its short queries to its longest.
QUERIES = [
    f"{ask} {topic}{'?' if i % 2 else ' and why does it matter for the planets around it?'}"
    for i, (ask, topic) in enumerate(
        (ask, topic)
        for ask in ("What is", "Tell me about", "Facts on", "How hot is")
        for topic in TOPICS
    )
]


class CountingEmbedder:
    """The real embedder behind the port, recording each query call's texts and vectors."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.query_calls: list[list[str]] = []
        self.vectors: dict[str, list[float]] = {}

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def max_tokens(self) -> int:
        return self._inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._inner.embed_documents(texts)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._inner.embed_queries(texts)
        self.query_calls.append(list(texts))
        self.vectors.update(zip(texts, vectors, strict=True))
        return vectors


async def _search_all(settings: Settings, embedder: CountingEmbedder) -> list[list[Hit]]:
    async with open_core(settings, embedder=embedder) as core:
        await ingest_samples(core)
        embedder.query_calls.clear()
        searches = (core.retrieval.search(q, "default", k=3, access=FULL_ACCESS) for q in QUERIES)
        return await asyncio.wait_for(asyncio.gather(*searches), WAIT_S)


async def test_concurrent_searches_share_embedder_calls_and_get_the_lone_query_vectors(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    assert len(set(QUERIES)) == 32
    counting = CountingEmbedder(embedder)
    batched = await _search_all(make_settings(), counting)

    assert 1 <= len(counting.query_calls) < len(QUERIES)
    assert sorted(q for call in counting.query_calls for q in call) == sorted(QUERIES)
    assert max(len(call) for call in counting.query_calls) > 1
    for query in QUERIES:
        alone = embedder.embed_queries([query])[0]
        assert np.allclose(counting.vectors[query], alone, atol=1e-5), query

    one_by_one = CountingEmbedder(embedder)
    unbatched = await _search_all(make_settings(embedding={"query_batch_max": 1}), one_by_one)
    assert sorted(one_by_one.query_calls) == sorted([q] for q in QUERIES)
    for got, want in zip(batched, unbatched, strict=True):
        assert [h.chunk_id for h in got] == [h.chunk_id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-4)


async def test_the_service_counts_its_query_batches(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> None:
    async with open_core(make_settings(), embedder=embedder) as core:
        await ingest_samples(core)
        stats = core.retrieval.query_batches
        before = (stats.calls, stats.items)
        searches = (core.retrieval.search(q, "default", access=FULL_ACCESS) for q in QUERIES)
        await asyncio.wait_for(asyncio.gather(*searches), WAIT_S)
        assert stats.items - before[1] == len(QUERIES)
        assert stats.calls - before[0] < len(QUERIES)
        assert 1 < stats.max_batch <= 64
        assert core.retrieval.rerank_batches is None  # no reranker configured
