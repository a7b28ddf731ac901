"""The real app in-process (ASGI transport + lifespan) over a real Edge store and model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.services import Services
from ingest.job import build_pipeline
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.retrieval import RetrievalService
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.edge import EdgeStore

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture
async def services(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[Services]:
    store = EdgeStore(settings.qdrant_dir, dim=embedder.dim, embedding_model=embedder.name)
    await build_pipeline(settings, store, embedder).run([SAMPLES], "default")
    retrieval = RetrievalService(store, embedder, QdrantBm25Encoder())
    yield Services(settings=settings, embedder=embedder, store=store, retrieval=retrieval)
    await store.close()


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, services=services)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c
