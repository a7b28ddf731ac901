"""The ports: what the core needs from an embedder, a vector store and a generator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from pipelines.access import Access
from pipelines.types import (
    CollectionStats,
    DenseQuery,
    DocState,
    EmbeddedChunk,
    Filters,
    GenerationChunk,
    GenerationRequest,
    Hit,
    SearchMode,
    SparseVector,
)


class Embedder(Protocol):
    """Dense text embeddings; sync and CPU/GPU bound (callers run it off the event loop)."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]: ...


class SparseEncoder(Protocol):
    """BM25-style sparse vectors; the store applies IDF."""

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]: ...

    def encode_query(self, text: str) -> SparseVector: ...


class Reranker(Protocol):
    """Scores (query, passage) pairs jointly, higher is better; sync and CPU/GPU bound."""

    @property
    def name(self) -> str: ...

    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """`score` for several queries in one model call (concurrent requests' reranks)."""
        ...


class VectorStore(Protocol):
    """Collections of chunks with dense + sparse vectors, payload filters and doc-level ops.

    Every read takes the caller's `Access` (no default: a read that forgets it does not type
    check): the collection is checked first (Forbidden), and only documents the caller may see
    are selected, inside the engine's query. `list_collections` lists every name (the caller
    keeps the visible ones: `Access.visible`); writes are the ingest job's and take none."""

    async def ensure_collection(self, collection: str, *, create: bool) -> None:
        """Check the collection matches the embedder (or create it); raise if it does not."""
        ...

    async def list_collections(self) -> list[str]: ...

    async def drop_collection(self, collection: str) -> None:
        """Delete the collection and everything in it (no error if it does not exist)."""
        ...

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None: ...

    async def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None: ...

    async def delete_stale_chunks(self, collection: str, doc_id: str, keep_hash: str) -> None:
        """Remove the document's chunks that do not carry `keep_hash`."""
        ...

    async def set_document_groups(
        self, collection: str, doc_id: str, groups: Sequence[str]
    ) -> None:
        """Give every chunk of the document this access list (empty: public), in one
        operation, without rewriting its vectors."""
        ...

    async def document_states(
        self, collection: str, filters: Filters | None = None, *, access: Access
    ) -> dict[str, DocState]:
        """What the store holds per document, from the chunks matching the filters (all
        chunks without: a full scan, ~30 s at 1M chunks on 2 cores)."""
        ...

    async def search(
        self,
        collection: str,
        *,
        dense: DenseQuery | None,
        sparse: SparseVector | None,
        k: int,
        mode: SearchMode,
        access: Access,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """The best k chunks. `dense` may be an async function computing the query vector:
        a hybrid search starts its sparse side while the query is being embedded."""
        ...

    async def stats(self, collection: str, *, access: Access) -> CollectionStats:
        """The documents and chunks the caller may see; for a caller who sees all of the
        collection, also its size on disk and its last change (CollectionStats)."""
        ...

    async def count(
        self, collection: str, filters: Filters | None = None, *, access: Access
    ) -> int:
        """Chunks matching the filters (all chunks without) that the caller may see, counted
        exactly."""
        ...

    async def commit(self, collection: str) -> None:
        """Make what was written durable and indexed (end of an ingest run)."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class Generator(Protocol):
    """Chat generation streamed as text deltas; cancelling the iterator aborts the request."""

    @property
    def model_names(self) -> list[str]: ...

    @property
    def max_model_len(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    async def ready(self) -> bool: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def close(self) -> None: ...
