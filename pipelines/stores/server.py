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
    HybridParams,
    Query,
    RankedSearch,
    Scored,
    add_states,
    check_collection_name,
    dense_of,
    mismatch_message,
    rescore_oversampling,
)
from pipelines.types import (
    CollectionStats,
    DocState,
    EmbeddedChunk,
    Filters,
    Hit,
    Range,
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


class QdrantServerStore(RankedSearch):
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
        quantization: str = "int8",
        oversampling: float = 2.0,
        rescore_candidates: bool = True,
        hybrid: HybridParams | None = None,
        exact: bool = False,
    ) -> None:
        self._client = client
        self._dim = dim
        self._model = embedding_model
        self._shards = shard_number
        self._replicas = replication_factor
        self._m = hnsw_m
        self._ef_construct = hnsw_ef_construct
        self._ef = hnsw_ef
        self._int8 = quantization == "int8"
        self._oversampling = oversampling
        self._rescore_candidates = rescore_candidates  # off: hybrid/MMR lists keep int8 scores
        self._hybrid = hybrid or HybridParams.from_settings()
        self._exact = exact  # brute-force dense search: the reference for HNSW recall
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
                quantization_config=(
                    models.ScalarQuantization(
                        scalar=models.ScalarQuantizationConfig(
                            type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                        )
                    )
                    if self._int8
                    else None
                ),
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

    async def drop_collection(self, collection: str) -> None:
        check_collection_name(collection)
        self._known.discard(collection)
        if await self._exists(collection):
            await self._client.delete_collection(collection)

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

    async def document_states(
        self, collection: str, filters: Filters | None = None
    ) -> dict[str, DocState]:
        await self.ensure_collection(collection, create=False)
        states: dict[str, DocState] = {}
        offset: Any = None
        flt = server_filter(filters)
        while True:
            records, offset = await self._client.scroll(
                collection,
                scroll_filter=flt,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=STATE_FIELDS,
                with_vectors=False,
            )
            add_states(states, (rec.payload or {} for rec in records))
            if offset is None:
                return states

    def _query_args(self, query: Query, *, limit: int, k: int, candidates: bool) -> dict[str, Any]:
        """A nearest query; `candidates`: a list for fusion or MMR (ids and scores only)."""
        if isinstance(query, SparseVector):
            sparse = models.SparseVector(indices=query.indices, values=query.values)
            return {"query": sparse, "using": SPARSE, "limit": limit}
        params = models.SearchParams(
            hnsw_ef=max(self._ef, limit),
            exact=self._exact,
            quantization=models.QuantizationSearchParams(
                ignore=self._exact or not self._int8,
                rescore=self._rescore_candidates or not candidates,
                oversampling=rescore_oversampling(self._oversampling, k, limit),
            ),
        )
        return {"query": query, "using": DENSE, "limit": limit, "search_params": params}

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: Filters | None
    ) -> list[Hit]:
        response = await self._client.query_points(
            collection,
            **self._query_args(query, limit=limit, k=limit, candidates=False),
            query_filter=server_filter(filters),
            with_payload=True,
        )
        return [
            Hit(score=float(p.score), chunk_id=str(p.id), payload=dict(p.payload or {}))
            for p in response.points
        ]

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: Filters | None
    ) -> list[Scored]:
        response = await self._client.query_points(
            collection,
            **self._query_args(query, limit=limit, k=k, candidates=True),
            query_filter=server_filter(filters),
            with_payload=False,
        )
        return [(str(p.id), float(p.score)) for p in response.points]

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        records = await self._client.retrieve(
            collection, [pid for pid, _ in ranked], with_payload=True, with_vectors=False
        )
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        return [
            Hit(score=score, chunk_id=pid, payload=payloads[pid])
            for pid, score in ranked
            if pid in payloads
        ]

    async def dense_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        records = await self._client.retrieve(
            collection, list(ids), with_payload=False, with_vectors=[DENSE]
        )
        return {str(r.id): dense_of(r.vector) for r in records}

    async def stats(self, collection: str) -> CollectionStats:
        await self.ensure_collection(collection, create=False)
        chunks = (await self._client.count(collection, exact=True)).count
        first = models.Filter(
            must=[models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))]
        )
        docs = (await self._client.count(collection, count_filter=first, exact=True)).count
        return CollectionStats(name=collection, documents=docs, chunks=chunks)

    async def count(self, collection: str, filters: Filters | None = None) -> int:
        await self.ensure_collection(collection, create=False)
        found = await self._client.count(
            collection, count_filter=server_filter(filters), exact=True
        )
        return found.count

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
