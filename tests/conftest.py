"""Shared fixtures: the real embedding model (loaded once), settings rooted in a temp dir, and
the composition root's core built from them."""

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
from pipelines.core import Core, open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import EmbeddingSettings, Settings
from tests.support.seeds import ingest_samples

# One ONNX export of the embedder for the whole session and its subprocesses (`rag ingest`
# in the SIGKILL test, uvicorn apps), not one per temporary data dir.
EMBEDDING_CACHE = Path(os.environ.get("RAG_TEST_MODEL_CACHE", "/tmp/ragserve-test-models"))
os.environ.setdefault("RAG_EMBEDDING__CACHE_DIR", str(EMBEDDING_CACHE / "embeddings"))


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
async def core(settings: Settings, embedder: SentenceTransformerEmbedder) -> AsyncIterator[Core]:
    """The composition root over `settings` (an empty Edge store in the temp dir), with the
    session's model."""
    async with open_core(settings, embedder=embedder) as built:
        yield built


@pytest.fixture
async def services(core: Core) -> Services:
    """The service's parts over a real Edge store holding the sample documents (no generator)."""
    await ingest_samples(core)
    return Services(core=core)
