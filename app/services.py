"""The long-lived parts of the service, built once in the lifespan and handed to routes."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal

from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.ports import Embedder, Generator, VectorStore
from pipelines.retrieval import RetrievalService
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores import build_store

log = logging.getLogger(__name__)
GeneratorState = Literal["disabled", "starting", "ready", "failed"]


@dataclass(slots=True)
class Services:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    retrieval: RetrievalService
    generator: Generator | None = None
    generator_state: GeneratorState = "disabled"
    generator_error: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def build_services(settings: Settings, stack: AsyncExitStack) -> Services:
    embedder = SentenceTransformerEmbedder(settings.embedding)
    store = build_store(settings, dim=embedder.dim, embedding_model=embedder.name)
    stack.push_async_callback(store.close)
    # Refuse to start on a collection built with another embedder (checked now, not later).
    for name in await store.list_collections():
        await store.ensure_collection(name, create=False)
    retrieval = RetrievalService(
        store,
        embedder,
        QdrantBm25Encoder(),
        default_k=settings.retrieval.k,
        max_k=settings.retrieval.max_k,
        default_mode=settings.retrieval.mode,
    )
    return Services(settings=settings, embedder=embedder, store=store, retrieval=retrieval)
