"""QdrantServerStore: a Qdrant server or distributed cluster through the async qdrant-client."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from pipelines.errors import CollectionNotFound, DependencyUnavailable, SchemaMismatch
from pipelines.stores.common import (
    DENSE,
    KEYWORD_INDEXES,
    SCROLL_PAGE,
    SPARSE,
    STATE_FIELDS,
    add_states,
    check_collection_name,
    mismatch_message,
)
from pipelines.types import (
    CollectionStats,
    DocState,
    EmbeddedChunk,
    Filters,
    Hit,
    Range,
    SearchMode,
    SparseVector,
)

log = logging.getLogger(__name__)


def server_filter(filters: Filters | None) -> models.Filter | None:
    must: list[Any] = []
    for key, value in (filters or {}).items():
        if isinstance(value, Range):
            must.append(
                models.FieldCondition(
                    key=key,
                    range=models.Range(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt),
                )
            )
        elif isinstance(value, list):
            must.append(models.FieldCondition(key=key, match=models.MatchAny(any=value)))
        elif isinstance(value, float):
            must.append(models.FieldCondition(key=key, range=models.Range(gte=value, lte=value)))
        else:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    return models.Filter(must=must) if must else None


class QdrantServerStore:
    """Collections on a Qdrant server/cluster (or qdrant-client's local mode in tests)."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        dim: int,
        embedding_model: str,
        shard_number: int = 1,
        replication_factor: int = 1,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 128,
        hnsw_ef: int = 128,
    ) -> None:
        self._client = client
        self._dim = dim
        self._model = embedding_model
        self._shards = shard_number
        self._replicas = replication_factor
        self._m = hnsw_m
        self._ef_construct = hnsw_ef_construct
        self._ef = hnsw_ef
        self._known: set[str] = set()

    @classmethod
    def connect(
        cls, url: str, api_key: str | None, timeout_s: float, **kwargs: Any
    ) -> QdrantServerStore:
        return cls(AsyncQdrantClient(url=url, api_key=api_key, timeout=int(timeout_s)), **kwargs)

    async def _exists(self, collection: str) -> bool:
        try:
            return await self._client.collection_exists(collection)
        except (ResponseHandlingException, ConnectionError) as exc:
            raise DependencyUnavailable(f"Qdrant is unreachable: {exc}") from exc

    async def ensure_collection(self, collection: str, *, create: bool) -> None:
        check_collection_name(collection)
        if collection in self._known:
            return
        if await self._exists(collection):
            info = await self._client.get_collection(collection)
            vectors = info.config.params.vectors
            params = vectors.get(DENSE) if isinstance(vectors, dict) else None
            if (
                params is None
                or params.size != self._dim
                or params.distance != models.Distance.COSINE
            ):
                have = (
                    f"{params.size}-dim {params.distance} vectors"
                    if params
                    else "no 'dense' named vector"
                )
                raise SchemaMismatch(
                    mismatch_message(
                        collection, have, f"{self._dim}-dim cosine vectors ({self._model})"
                    )
                )
        elif create:
            await self._client.create_collection(
                collection,
                vectors_config={
                    DENSE: models.VectorParams(size=self._dim, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                shard_number=self._shards,
                replication_factor=self._replicas,
                hnsw_config=models.HnswConfigDiff(m=self._m, ef_construct=self._ef_construct),
            )
            for field in KEYWORD_INDEXES:
                await self._client.create_payload_index(
                    collection, field, models.PayloadSchemaType.KEYWORD
                )
            await self._client.create_payload_index(
                collection, "chunk_index", models.PayloadSchemaType.INTEGER
            )
        else:
            raise CollectionNotFound(collection)
        self._known.add(collection)

    async def list_collections(self) -> list[str]:
        resp = await self._client.get_collections()
        return sorted(c.name for c in resp.collections)

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None:
        if not points:
            return
        await self.ensure_collection(collection, create=True)
        structs = []
        for p in points:
            vector: dict[str, Any] = {DENSE: p.dense}
            if p.sparse is not None and p.sparse.indices:
                vector[SPARSE] = models.SparseVector(
                    indices=p.sparse.indices, values=p.sparse.values
                )
            structs.append(
                models.PointStruct(id=p.chunk.chunk_id, vector=vector, payload=p.chunk.payload())
            )
        await self._client.upsert(collection, points=structs, wait=True)

    async def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        flt = models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))]
        )
        await self._client.delete(
            collection, points_selector=models.FilterSelector(filter=flt), wait=True
        )

    async def delete_stale_chunks(self, collection: str, doc_id: str, keep_hash: str) -> None:
        flt = models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))],
            must_not=[
                models.FieldCondition(key="content_hash", match=models.MatchValue(value=keep_hash))
            ],
        )
        await self._client.delete(
            collection, points_selector=models.FilterSelector(filter=flt), wait=True
        )

    async def document_states(self, collection: str) -> dict[str, DocState]:
        await self.ensure_collection(collection, create=False)
        states: dict[str, DocState] = {}
        offset: Any = None
        while True:
            records, offset = await self._client.scroll(
                collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=STATE_FIELDS,
                with_vectors=False,
            )
            add_states(states, (rec.payload or {} for rec in records))
            if offset is None:
                return states

    async def search(
        self,
        collection: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        k: int,
        mode: SearchMode,
        filters: Filters | None = None,
    ) -> list[Hit]:
        await self.ensure_collection(collection, create=False)
        flt = server_filter(filters)
        params = models.SearchParams(hnsw_ef=max(self._ef, k))
        sparse_q = (
            models.SparseVector(indices=sparse.indices, values=sparse.values)
            if sparse is not None and sparse.indices
            else None
        )
        if mode == "hybrid" and dense is not None and sparse_q is not None:
            depth = max(k * 4, 40)
            resp = await self._client.query_points(
                collection,
                prefetch=[
                    models.Prefetch(
                        query=dense, using=DENSE, limit=depth, filter=flt, params=params
                    ),
                    models.Prefetch(query=sparse_q, using=SPARSE, limit=depth, filter=flt),
                ],
                query=models.RrfQuery(rrf=models.Rrf(k=60)),
                limit=k,
                with_payload=True,
            )
        elif mode == "sparse":
            if sparse_q is None:
                return []
            resp = await self._client.query_points(
                collection,
                query=sparse_q,
                using=SPARSE,
                query_filter=flt,
                limit=k,
                with_payload=True,
            )
        else:
            if dense is None:
                return []
            resp = await self._client.query_points(
                collection,
                query=dense,
                using=DENSE,
                query_filter=flt,
                limit=k,
                with_payload=True,
                search_params=params,
            )
        return [
            Hit(score=float(p.score), chunk_id=str(p.id), payload=dict(p.payload or {}))
            for p in resp.points
        ]

    async def stats(self, collection: str) -> CollectionStats:
        await self.ensure_collection(collection, create=False)
        chunks = (await self._client.count(collection, exact=True)).count
        first = models.Filter(
            must=[models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))]
        )
        docs = (await self._client.count(collection, count_filter=first, exact=True)).count
        return CollectionStats(name=collection, documents=docs, chunks=chunks)

    async def commit(self, collection: str) -> None:
        return None  # the server indexes in the background; upserts use wait=True

    async def healthy(self) -> bool:
        try:
            await self._client.get_collections()
        except (ResponseHandlingException, UnexpectedResponse, ConnectionError, OSError):
            return False
        return True

    async def close(self) -> None:
        await self._client.close()
