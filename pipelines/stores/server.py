"""QdrantServerStore: a Qdrant server or distributed cluster through the async qdrant-client."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from pipelines.errors import CollectionNotFound, DependencyUnavailable
from pipelines.ranking import Scored
from pipelines.stores.config import StoreConfig
from pipelines.stores.schema import DENSE, PAYLOAD_INDEXES, SPARSE, STATE_FIELDS, Layout, dense_of
from pipelines.stores.store import Footprint, QdrantStore
from pipelines.stores.terms import (
    DenseNearest,
    FilterSyntax,
    Nearest,
    Selection,
    SparseNearest,
    vectors_of,
)
from pipelines.types import EmbeddedChunk, Filters, Hit, SparseVector

log = logging.getLogger(__name__)
# The collection metadata key (Qdrant 1.16+) holding the collection's last change.
WRITTEN_KEY = "ragserve_written_at"

# A readiness probe answers within this (or the client's timeout, if shorter): /readyz must
# not hang for a search's timeout on a server that accepts connections and never answers.
HEALTH_TIMEOUT_S = 2.0

_INDEX_TYPES = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
}

# -- translation: the store's terms in qdrant-client's models -------------------------------


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


def _conjunction(must: list[Any], must_not: list[Any]) -> models.Filter:
    return models.Filter(must=must or None, must_not=must_not or None)


_FILTERS: FilterSyntax[models.Condition, models.Filter] = FilterSyntax(
    match=lambda key, value: models.FieldCondition(key=key, match=models.MatchValue(value=value)),
    match_any=lambda key, values: models.FieldCondition(key=key, match=models.MatchAny(any=values)),
    in_range=lambda key, r: models.FieldCondition(
        key=key, range=models.Range(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
    ),
    is_empty=lambda key: models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
    disjunction=lambda conditions: models.Filter(should=conditions),
    conjunction=_conjunction,
)
server_filter = _FILTERS.filter
server_select = _FILTERS.select


def server_point(p: EmbeddedChunk) -> models.PointStruct:
    vector = vectors_of(p, _sparse)
    return models.PointStruct(id=p.chunk.chunk_id, vector=vector, payload=p.chunk.payload())


def server_params(q: DenseNearest) -> models.SearchParams:
    quantization = models.QuantizationSearchParams(
        ignore=not q.quantized, rescore=q.rescore, oversampling=q.oversampling
    )
    return models.SearchParams(hnsw_ef=q.hnsw_ef, exact=q.exact, quantization=quantization)


def _layout(info: models.CollectionInfo) -> Layout:
    vectors = info.config.params.vectors
    params = vectors.get(DENSE) if isinstance(vectors, dict) else None
    if params is None:
        return Layout(dim=None, distance=None)
    return Layout(dim=params.size, distance=str(params.distance.value).lower())


class ServerBackend:
    """Collections on a Qdrant server/cluster (or qdrant-client's local mode in tests)."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        config: StoreConfig,
        *,
        url: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._config = config
        self._where = f"Qdrant at {url}" if url else "Qdrant"
        self._health_timeout_s = min(HEALTH_TIMEOUT_S, timeout_s or HEALTH_TIMEOUT_S)

    @contextmanager
    def _reaching(self, what: str, collection: str | None = None) -> Iterator[None]:
        """qdrant-client's transport failures as the one retryable 503 naming the server.

        The client wraps every failure to send or read (refused, reset, timed out, a
        connection closed mid-answer) in ResponseHandlingException; a 5xx (a proxy in front
        of a node that is gone, a node shutting down) and a 429 are the server unable to
        answer now. The client stays usable: its next call opens a new connection, so the
        service recovers by itself once the server is back. A 4xx is a request we should not
        have sent: a bug, left to surface as one — except a 404 for the `collection` used: a
        server that came back without its data (no persistence) no longer has it."""
        try:
            yield
        except ResponseHandlingException as exc:
            reason = f"{type(exc.source).__name__}: {exc.source}".rstrip(": ")
            raise DependencyUnavailable(
                f"{self._where} is unreachable ({what}): {reason}; retry once it is back"
            ) from exc
        except ResourceExhaustedResponse as exc:
            raise DependencyUnavailable(f"{self._where} is overloaded ({what}): {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code == 404 and collection is not None:
                raise CollectionNotFound(collection) from exc
            if exc.status_code is None or exc.status_code < 500:
                raise
            raise DependencyUnavailable(
                f"{self._where} answered HTTP {exc.status_code} ({what}); retry later"
            ) from exc
        except ConnectionError as exc:  # gRPC and local mode raise the builtin kinds
            raise DependencyUnavailable(f"{self._where} is unreachable ({what}): {exc}") from exc

    async def _exists(self, collection: str) -> bool:
        with self._reaching(f"collection '{collection}'"):
            return await self._client.collection_exists(collection)

    async def layout(self, collection: str) -> Layout | None:
        if not await self._exists(collection):
            return None
        with self._reaching(f"collection '{collection}'"):
            return _layout(await self._client.get_collection(collection))

    async def open(self, collection: str, *, create: bool) -> None:
        if not create:  # the server keeps every collection open
            await self._add_missing_indexes(collection)
            return
        c = self._config
        with self._reaching(f"create collection '{collection}'"):
            await self._create(collection, c)

    async def _create(self, collection: str, c: StoreConfig) -> None:
        await self._client.create_collection(
            collection,
            vectors_config={
                DENSE: models.VectorParams(size=c.dim, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            shard_number=c.shard_number,
            replication_factor=c.replication_factor,
            hnsw_config=models.HnswConfigDiff(m=c.hnsw_m, ef_construct=c.hnsw_ef_construct),
            quantization_config=(
                models.ScalarQuantization(
                    scalar=models.ScalarQuantizationConfig(
                        type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                    )
                )
                if c.quantization == "int8"
                else None
            ),
        )
        for field, kind in PAYLOAD_INDEXES.items():
            await self._client.create_payload_index(collection, field, _INDEX_TYPES[kind])

    async def _add_missing_indexes(self, collection: str) -> None:
        """A collection created before a field was indexed (`groups`) gets its index now."""
        with self._reaching(f"collection '{collection}'"):
            indexed = (await self._client.get_collection(collection)).payload_schema
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in indexed:
                    await self._client.create_payload_index(
                        collection, field, _INDEX_TYPES[kind], wait=True
                    )

    async def collections(self) -> list[str]:
        with self._reaching("list collections"):
            resp = await self._client.get_collections()
        return [c.name for c in resp.collections]

    async def drop(self, collection: str) -> None:
        if await self._exists(collection):
            with self._reaching(f"drop collection '{collection}'"):
                await self._client.delete_collection(collection)

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None:
        structs = [server_point(p) for p in points]
        with self._reaching(f"write to collection '{collection}'", collection):
            await self._client.upsert(collection, points=structs, wait=True)

    async def delete(self, collection: str, must: Filters, must_not: Filters | None) -> None:
        flt = server_filter(must, must_not)
        if flt is None:  # nothing selected
            return
        selector = models.FilterSelector(filter=flt)
        with self._reaching(f"delete from collection '{collection}'", collection):
            await self._client.delete(collection, points_selector=selector, wait=True)

    async def set_payload(self, collection: str, must: Filters, payload: dict[str, Any]) -> None:
        flt = server_filter(must)
        if flt is None:  # nothing selected
            return
        selector = models.FilterSelector(filter=flt)
        with self._reaching(f"write to collection '{collection}'", collection):
            await self._client.set_payload(collection, payload, points=selector, wait=True)

    async def scroll(
        self, collection: str, selection: Selection, *, offset: Any, limit: int
    ) -> tuple[list[dict[str, Any]], Any]:
        with self._reaching(f"read collection '{collection}'", collection):
            records, offset = await self._client.scroll(
                collection,
                scroll_filter=server_select(selection),
                limit=limit,
                offset=offset,
                with_payload=STATE_FIELDS,
                with_vectors=False,
            )
        return [rec.payload or {} for rec in records], offset

    async def count(self, collection: str, selection: Selection) -> int:
        with self._reaching(f"count collection '{collection}'", collection):
            found = await self._client.count(
                collection, count_filter=server_select(selection), exact=True
            )
        return found.count

    async def _query(self, collection: str, q: Nearest) -> list[models.ScoredPoint]:
        if isinstance(q, SparseNearest):
            query: list[float] | models.SparseVector = _sparse(q.vector)
            using, params = SPARSE, None
        else:
            query, using, params = q.vector, DENSE, server_params(q)
        with self._reaching(f"search collection '{collection}'", collection):
            response = await self._client.query_points(
                collection,
                query=query,
                using=using,
                limit=q.limit,
                query_filter=server_select(q.selection),
                search_params=params,
                with_payload=q.with_payload,
            )
        return response.points

    async def query_hits(self, collection: str, query: Nearest) -> list[Hit]:
        return [
            Hit(score=float(p.score), chunk_id=str(p.id), payload=dict(p.payload or {}))
            for p in await self._query(collection, query)
        ]

    async def query_ids(self, collection: str, query: Nearest) -> list[Scored]:
        return [(str(p.id), float(p.score)) for p in await self._query(collection, query)]

    async def retrieve_hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        with self._reaching(f"search collection '{collection}'", collection):
            records = await self._client.retrieve(
                collection, [pid for pid, _ in ranked], with_payload=True, with_vectors=False
            )
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        return [
            Hit(score=score, chunk_id=pid, payload=payloads[pid])
            for pid, score in ranked
            if pid in payloads
        ]

    async def retrieve_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        with self._reaching(f"search collection '{collection}'", collection):
            records = await self._client.retrieve(
                collection, list(ids), with_payload=False, with_vectors=[DENSE]
            )
        return {str(r.id): dense_of(r.vector) for r in records}

    async def commit(self, collection: str) -> None:
        return None  # the server indexes in the background; upserts use wait=True

    async def footprint(self, collection: str) -> Footprint:
        """The last change from the collection's metadata. The size is unknown: the
        collection API reports points, not bytes (each node's telemetry knows its own
        shards' segments only)."""
        with self._reaching(f"read collection '{collection}'", collection):
            info = await self._client.get_collection(collection)
        at = (info.config.metadata or {}).get(WRITTEN_KEY)
        return Footprint(
            size_bytes=None,
            written_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
        )

    async def mark_written(self, collection: str, at: datetime) -> None:
        """Merged into the collection's metadata (other keys kept). A server older than 1.16
        refuses the field: the time then stays unknown, the write it follows stands."""
        metadata = {WRITTEN_KEY: at.isoformat()}
        try:
            with self._reaching(f"write to collection '{collection}'", collection):
                await self._client.update_collection(collection, metadata=metadata)
        except UnexpectedResponse as exc:
            log.warning(
                "%s keeps no collection metadata (%s): last ingest unknown", self._where, exc
            )

    async def healthy(self) -> bool:
        """The server lists its collections within the probe's bound."""
        try:
            async with asyncio.timeout(self._health_timeout_s):
                await self._client.get_collections()
        except (
            TimeoutError,
            ResponseHandlingException,
            ResourceExhaustedResponse,
            UnexpectedResponse,
            ConnectionError,
            OSError,
        ):
            return False
        return True

    async def close(self) -> None:
        await self._client.close()


class QdrantServerStore(QdrantStore):
    """The VectorStore on a Qdrant server or cluster, through one async client."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        config: StoreConfig,
        *,
        url: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        super().__init__(ServerBackend(client, config, url=url, timeout_s=timeout_s), config)

    @classmethod
    def connect(
        cls, url: str, api_key: str | None, timeout_s: float, config: StoreConfig
    ) -> QdrantServerStore:
        # qdrant-client takes whole seconds (also sent to the server as its own deadline):
        # round up, so that 0.5 s is 1 s and not 0 (every call would time out at once).
        seconds = max(1, math.ceil(timeout_s))
        client = AsyncQdrantClient(url=url, api_key=api_key, timeout=seconds)
        return cls(client, config, url=url, timeout_s=timeout_s)
