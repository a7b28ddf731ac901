"""EdgeStore: the embedded Qdrant engine (qdrant-edge), one on-disk shard per collection."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import anyio
import qdrant_edge as qe

from pipelines.errors import CollectionNotFound, SchemaMismatch, StoreLocked
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
T = TypeVar("T")
_META = "ragserve.json"


def edge_filter(filters: Filters | None, extra: list[Any] | None = None) -> qe.Filter | None:
    must: list[Any] = list(extra or [])
    for key, value in (filters or {}).items():
        if isinstance(value, Range):
            must.append(
                qe.FieldCondition(
                    key=key,
                    range=qe.RangeFloat(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt),
                )
            )
        elif isinstance(value, list):
            must.append(qe.FieldCondition(key=key, match=qe.MatchAny(value)))  # type: ignore[arg-type]
        elif isinstance(value, float):
            must.append(qe.FieldCondition(key=key, range=qe.RangeFloat(gte=value, lte=value)))
        else:
            must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
    return qe.Filter(must=must) if must else None


def _match(key: str, value: str) -> qe.FieldCondition:
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))


def _key(point_id: Any) -> Any:
    """A candidate's id as fusion handles it: a UUID as its int (hashed natively; UUID's own
    __hash__ is Python code, ~25% of fusing 2 x 200 candidates), a numeric id as is."""
    return point_id.int if isinstance(point_id, UUID) else point_id


def _point_id(key: Any) -> Any:
    # UUIDs of every version are >= 2**76 (version bits); Qdrant's numeric ids are < 2**64.
    return UUID(int=key) if key >= 1 << 64 else key


class EdgeStore(RankedSearch):
    """Qdrant Edge shards under `root/<collection>`; calls run in worker threads."""

    def __init__(
        self,
        root: Path,
        *,
        dim: int,
        embedding_model: str,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 128,
        hnsw_ef: int = 128,
        quantization: str = "int8",
        oversampling: float = 2.0,
        rescore_candidates: bool = True,
        max_threads: int = 4,
        payload_in_ram: bool = True,
        hybrid: HybridParams | None = None,
        exact: bool = False,
    ) -> None:
        self._root = root
        self._dim = dim
        self._model = embedding_model
        self._m = hnsw_m
        self._ef_construct = hnsw_ef_construct
        self._ef = hnsw_ef
        self._int8 = quantization == "int8"
        self._oversampling = oversampling
        self._rescore_candidates = rescore_candidates  # off: hybrid/MMR lists keep int8 scores
        self._payload_memory = qe.Memory.Cached if payload_in_ram else qe.Memory.Cold
        self._hybrid = hybrid or HybridParams.from_settings()
        self._exact = exact  # brute-force dense search: the reference for HNSW recall
        self._shards: dict[str, qe.EdgeShard] = {}
        self._open_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._dirty: set[str] = set()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    def _config(self) -> qe.EdgeConfig:
        int8 = (
            qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
            if self._int8
            else None
        )
        return qe.EdgeConfig(
            vectors={
                DENSE: qe.EdgeVectorParams(
                    size=self._dim, distance=qe.Distance.Cosine, quantization_config=int8
                )
            },
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=self._m, ef_construct=self._ef_construct, full_scan_threshold=10_000
            ),
            payload_memory=self._payload_memory,
        )

    def _path(self, collection: str) -> Path:
        return self._root / check_collection_name(collection)

    def _check_meta(self, collection: str, path: Path) -> None:
        meta_file = path / _META
        if not meta_file.is_file():
            return
        meta = json.loads(meta_file.read_text())
        if meta.get("dim") != self._dim or meta.get("distance") != "cosine":
            have = f"{meta.get('dim')}-dim {meta.get('distance')} vectors ({meta.get('model')})"
            want = f"{self._dim}-dim cosine vectors ({self._model})"
            raise SchemaMismatch(mismatch_message(collection, have, want))

    def _open(self, collection: str, create: bool) -> qe.EdgeShard:
        with self._open_lock:
            shard = self._shards.get(collection)
            if shard is not None:
                return shard
            path = self._path(collection)
            if (path / _META).is_file():
                self._check_meta(collection, path)
                try:
                    shard = qe.EdgeShard.load(str(path))
                except Exception as exc:  # the engine raises a bare Exception
                    if "WouldBlock" in str(exc):  # another process holds the shard's WAL lock
                        raise StoreLocked(collection, str(path)) from exc
                    raise
            elif create:
                # A folder without the meta file is a create that died half-way: start over.
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(parents=True)
                shard = qe.EdgeShard.create(str(path), self._config())
                for field in KEYWORD_INDEXES:
                    shard.update(
                        qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                    )
                shard.update(
                    qe.UpdateOperation.create_field_index(
                        "chunk_index", qe.PayloadSchemaType.Integer
                    )
                )
                shard.flush()
                meta = {
                    "dim": self._dim,
                    "distance": "cosine",
                    "model": self._model,
                    "sparse": SPARSE,
                }
                (path / _META).write_text(json.dumps(meta))
            else:
                raise CollectionNotFound(collection)
            self._shards[collection] = shard
            return shard

    async def ensure_collection(self, collection: str, *, create: bool) -> None:
        if collection in self._shards:  # open already: no worker-thread round trip
            return
        await self._run(self._open, collection, create)

    async def list_collections(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(p.name for p in self._root.iterdir() if (p / _META).is_file())

    def _drop(self, collection: str) -> None:
        path = self._path(collection)
        with self._open_lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            self._dirty.discard(collection)
            shutil.rmtree(path, ignore_errors=True)

    async def drop_collection(self, collection: str) -> None:
        await self._run(self._drop, collection)

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None:
        if not points:
            return
        shard = await self._run(self._open, collection, True)
        edge_points = []
        for p in points:
            vector: dict[str, Any] = {DENSE: p.dense}
            if p.sparse is not None and p.sparse.indices:
                vector[SPARSE] = qe.SparseVector(p.sparse.indices, p.sparse.values)
            edge_points.append(
                qe.Point(id=p.chunk.chunk_id, vector=vector, payload=p.chunk.payload())
            )
        await self._run(shard.update, qe.UpdateOperation.upsert_points(edge_points))
        self._dirty.add(collection)

    async def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        shard = await self._run(self._open, collection, False)
        flt = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])
        await self._run(shard.update, qe.UpdateOperation.delete_points_by_filter(flt))
        self._dirty.add(collection)

    async def delete_stale_chunks(self, collection: str, doc_id: str, keep_hash: str) -> None:
        shard = await self._run(self._open, collection, False)
        flt = qe.Filter(
            must=[_match("doc_id", doc_id)], must_not=[_match("content_hash", keep_hash)]
        )
        await self._run(shard.update, qe.UpdateOperation.delete_points_by_filter(flt))

    def _states(self, collection: str, filters: Filters | None) -> dict[str, DocState]:
        shard = self._open(collection, False)
        states: dict[str, DocState] = {}
        offset: Any = None
        flt = edge_filter(filters)
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=SCROLL_PAGE,
                    filter=flt,
                    with_payload=STATE_FIELDS,
                    with_vector=False,
                )
            )
            add_states(states, (rec.payload or {} for rec in records))
            if offset is None:
                return states

    async def document_states(
        self, collection: str, filters: Filters | None = None
    ) -> dict[str, DocState]:
        return await self._run(self._states, collection, filters)

    def _quantization_params(
        self, k: int, depth: int, rescore: bool
    ) -> qe.QuantizationSearchParams:
        if not self._int8 or self._exact:  # original vectors only (exact: the reference)
            return qe.QuantizationSearchParams(ignore=True)
        if not rescore:
            return qe.QuantizationSearchParams(rescore=False)
        return qe.QuantizationSearchParams(
            rescore=True, oversampling=rescore_oversampling(self._oversampling, k, depth)
        )

    def _request(
        self, query: Query, *, limit: int, k: int, filters: Filters | None, candidates: bool
    ) -> qe.QueryRequest:
        """A nearest query; `candidates`: a list for fusion or MMR (ids and scores only)."""
        flt = edge_filter(filters)
        if isinstance(query, SparseVector):
            return qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(qe.SparseVector(query.indices, query.values), using=SPARSE),
                filter=flt,
                with_payload=not candidates,
            )
        rescore = self._rescore_candidates or not candidates
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query, using=DENSE),
            filter=flt,
            params=qe.SearchParams(
                hnsw_ef=max(self._ef, limit),
                exact=self._exact,
                quantization=self._quantization_params(k, limit, rescore),
            ),
            with_payload=not candidates,
        )

    def _hits(self, collection: str, request: qe.QueryRequest) -> list[Hit]:
        return [
            Hit(score=float(p.score), chunk_id=str(p.id), payload=dict(p.payload or {}))
            for p in self._open(collection, False).query(request)
        ]

    def _ids(self, collection: str, request: qe.QueryRequest) -> list[Scored]:
        return [(_key(p.id), float(p.score)) for p in self._open(collection, False).query(request)]

    def _ranked_hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        records = self._open(collection, False).retrieve(
            [_point_id(key) for key, _ in ranked], with_payload=True, with_vector=False
        )
        found = {_key(r.id): r for r in records}
        return [
            Hit(score=score, chunk_id=str(found[key].id), payload=dict(found[key].payload or {}))
            for key, score in ranked
            if key in found
        ]

    def _vectors(self, collection: str, keys: Sequence[Any]) -> dict[Any, list[float]]:
        records = self._open(collection, False).retrieve(
            [_point_id(key) for key in keys], with_payload=False, with_vector=[DENSE]
        )
        return {_key(r.id): dense_of(r.vector) for r in records}

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: Filters | None
    ) -> list[Hit]:
        request = self._request(query, limit=limit, k=limit, filters=filters, candidates=False)
        return await self._run(self._hits, collection, request)

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: Filters | None
    ) -> list[Scored]:
        request = self._request(query, limit=limit, k=k, filters=filters, candidates=True)
        return await self._run(self._ids, collection, request)

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        return await self._run(self._ranked_hits, collection, ranked)

    async def dense_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        return await self._run(self._vectors, collection, ids)

    def _stats(self, collection: str) -> CollectionStats:
        shard = self._open(collection, False)
        chunks = shard.count(qe.CountRequest(exact=True))
        # Each document's first chunk is its chunk 0.
        docs = shard.count(
            qe.CountRequest(
                filter=qe.Filter(
                    must=[qe.FieldCondition(key="chunk_index", match=qe.MatchValue(0))]
                ),
                exact=True,
            )
        )
        return CollectionStats(name=collection, documents=docs, chunks=chunks)

    async def stats(self, collection: str) -> CollectionStats:
        return await self._run(self._stats, collection)

    def _count(self, collection: str, filters: Filters | None) -> int:
        shard = self._open(collection, False)
        return int(shard.count(qe.CountRequest(filter=edge_filter(filters), exact=True)))

    async def count(self, collection: str, filters: Filters | None = None) -> int:
        return await self._run(self._count, collection, filters)

    def _finish(self, collection: str) -> None:
        shard = self._shards[collection]
        shard.optimize()  # Edge has no background optimizer: build the HNSW index now.
        shard.flush()

    async def commit(self, collection: str) -> None:
        """Flush and index what this process wrote (called at the end of an ingest run)."""
        if collection in self._dirty:
            await self._run(self._finish, collection)
            self._dirty.discard(collection)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        with self._open_lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
