"""Shared fixtures: the real embedding model (loaded once) and settings rooted in a temp dir."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app.services import Services
from ingest.job import build_pipeline
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.retrieval import RetrievalService
from pipelines.settings import EmbeddingSettings, Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.edge import EdgeStore

REPO = Path(__file__).resolve().parent.parent
# One ONNX export of the embedder for the whole session and its subprocesses (`rag ingest`
# in the SIGKILL test, uvicorn apps), not one per temporary data dir.
EMBEDDING_CACHE = Path(os.environ.get("RAG_TEST_MODEL_CACHE", "/tmp/ragserve-test-models"))
os.environ.setdefault("RAG_EMBEDDING__CACHE_DIR", str(EMBEDDING_CACHE / "embeddings"))
SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        EmbeddingSettings(), cache_dir=Path(os.environ["RAG_EMBEDDING__CACHE_DIR"])
    )


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings(_env_file=None, data_dir=tmp_path / "data", **overrides)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def services(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[Services]:
    """The service's parts over a real Edge store holding the sample documents (no generator)."""
    store = EdgeStore(settings.qdrant_dir, dim=embedder.dim, embedding_model=embedder.name)
    await build_pipeline(settings, store, embedder).run([SAMPLES], "default")
    retrieval = RetrievalService(store, embedder, QdrantBm25Encoder())
    yield Services(settings=settings, embedder=embedder, store=store, retrieval=retrieval)
    await store.close()
