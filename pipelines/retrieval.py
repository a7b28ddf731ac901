"""Retrieval: embed the query (dense + sparse), search the store; a LangChain retriever on top."""

from __future__ import annotations

from typing import Any

import anyio
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from pipelines.errors import InvalidInput
from pipelines.ports import Embedder, SparseEncoder, VectorStore
from pipelines.types import Filters, Hit, SearchMode


class RetrievalService:
    """Query → ranked chunks. Knows nothing of HTTP; used by the API, the CLI and the chain."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        *,
        default_k: int = 5,
        max_k: int = 100,
        default_mode: SearchMode = "dense",
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.default_k = default_k
        self.max_k = max_k
        self.default_mode: SearchMode = default_mode
        self._limiter = anyio.CapacityLimiter(1)  # one encode at a time: torch uses every core

    async def search(
        self,
        query: str,
        collection: str,
        *,
        k: int | None = None,
        mode: SearchMode | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        if not query.strip():
            raise InvalidInput("query is empty")
        k = k or self.default_k
        if k > self.max_k:
            raise InvalidInput(f"k={k} is above the limit of {self.max_k}")
        mode = mode or self.default_mode
        await self.store.ensure_collection(collection, create=False)
        dense = None
        if mode in ("dense", "hybrid"):
            dense = (
                await anyio.to_thread.run_sync(
                    self.embedder.embed_queries, [query], limiter=self._limiter
                )
            )[0]
        sparse = self.sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        return await self.store.search(
            collection, dense=dense, sparse=sparse, k=k, mode=mode, filters=filters
        )


def hit_to_document(hit: Hit) -> Document:
    metadata = {k: v for k, v in hit.payload.items() if k != "text"}
    metadata["score"] = hit.score
    metadata["chunk_id"] = hit.chunk_id
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)


def document_to_hit(doc: Document) -> Hit:
    payload = {k: v for k, v in doc.metadata.items() if k not in ("score", "chunk_id")}
    payload["text"] = doc.page_content
    return Hit(
        score=float(doc.metadata.get("score", 0.0)),
        chunk_id=str(doc.metadata.get("chunk_id", doc.id)),
        payload=payload,
    )


class StoreRetriever(BaseRetriever):
    """LangChain retriever over the store port; per-call `collection`, `k`, `mode`, `filters`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: RetrievalService
    collection: str = "default"
    k: int | None = None
    mode: SearchMode | None = None
    filters: Filters | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        raise NotImplementedError("StoreRetriever is async-only: use ainvoke()")

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = await self.service.search(
            query,
            kwargs.get("collection", self.collection),
            k=kwargs.get("k", self.k),
            mode=kwargs.get("mode", self.mode),
            filters=kwargs.get("filters", self.filters),
        )
        return [hit_to_document(h) for h in hits]
