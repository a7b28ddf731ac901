"""EdgeStore: the embedded Qdrant engine (qdrant-edge), one on-disk shard per collection."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import anyio
import qdrant_edge as qe

from pipelines.errors import CollectionNotFound, StoreLocked
from pipelines.ranking import Scored
from pipelines.stores.config import StoreConfig
from pipelines.stores.faults import allocated_bytes, check_space, storage_faults, write_atomically
from pipelines.stores.schema import (
    DENSE,
    PAYLOAD_INDEXES,
    SPARSE,
    STATE_FIELDS,
    Layout,
    check_collection_name,
    dense_of,
)
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

T = TypeVar("T")
_META = "ragserve.json"  # written last when a shard is created: a shard without it is torn
_WRITTEN = "ragserve-written.json"  # the collection's last change (QdrantStore.commit)
_POINT_BYTES = 16 * 1024  # disk a point may take at most when written (WAL + segment), text aside
_INDEX_TYPES = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}

# -- translation: the store's terms in qdrant-edge's ----------------------------------------


def _sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(vector.indices, vector.values)


def _conjunction(must: list[Any], must_not: list[Any]) -> qe.Filter:
    return qe.Filter(must=must or None, must_not=must_not or None)


_FILTERS: FilterSyntax[qe.ConditionType, qe.Filter] = FilterSyntax(
    match=lambda key, value: qe.FieldCondition(key=key, match=qe.MatchValue(value)),
    match_any=lambda key, values: qe.FieldCondition(key=key, match=qe.MatchAny(values)),  # type: ignore[arg-type]
    in_range=lambda key, r: qe.FieldCondition(
        key=key, range=qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
    ),
    is_empty=qe.IsEmptyCondition,
    disjunction=lambda conditions: qe.Filter(should=conditions),
    conjunction=_conjunction,
)
edge_filter = _FILTERS.filter
edge_select = _FILTERS.select


def edge_point(p: EmbeddedChunk) -> qe.Point:
    return qe.Point(id=p.chunk.chunk_id, vector=vectors_of(p, _sparse), payload=p.chunk.payload())


def _quantization(q: DenseNearest) -> qe.QuantizationSearchParams:
    if not q.quantized:
        return qe.QuantizationSearchParams(ignore=True)
    if not q.rescore:
        return qe.QuantizationSearchParams(rescore=False)
    return qe.QuantizationSearchParams(rescore=True, oversampling=q.oversampling)


def edge_request(q: Nearest) -> qe.QueryRequest:
    if isinstance(q, SparseNearest):
        query, params = qe.Query.Nearest(_sparse(q.vector), using=SPARSE), None
    else:
        query = qe.Query.Nearest(q.vector, using=DENSE)
        params = qe.SearchParams(hnsw_ef=q.hnsw_ef, exact=q.exact, quantization=_quantization(q))
    return qe.QueryRequest(
        limit=q.limit,
        query=query,
        filter=edge_select(q.selection),
        params=params,
        with_payload=q.with_payload,
    )


def edge_config(config: StoreConfig) -> qe.EdgeConfig:
    """A new shard's vectors, index and payload storage."""
    int8 = (
        qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
        if config.quantization == "int8"
        else None
    )
    return qe.EdgeConfig(
        vectors={
            DENSE: qe.EdgeVectorParams(
                size=config.dim, distance=qe.Distance.Cosine, quantization_config=int8
            )
        },
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        hnsw_config=qe.HnswIndexConfig(
            m=config.hnsw_m, ef_construct=config.hnsw_ef_construct, full_scan_threshold=10_000
        ),
        payload_memory=qe.Memory.Cached if config.payload_memory == "cached" else qe.Memory.Cold,
    )


def _key(point_id: Any) -> Any:
    """A candidate's id as fusion handles it: a UUID as its int (hashed natively; UUID's own
    __hash__ is Python code, ~25% of fusing 2 x 200 candidates), a numeric id as is."""
    return point_id.int if isinstance(point_id, UUID) else point_id


def _point_id(key: Any) -> Any:
    # UUIDs of every version are >= 2**76 (version bits); Qdrant's numeric ids are < 2**64.
    return UUID(int=key) if key >= 1 << 64 else key


# -- I/O: engine calls run in worker threads, a whole query or page per thread hop ----------


def _hits(shard: qe.EdgeShard, request: qe.QueryRequest) -> list[Hit]:
    return [
        Hit(score=float(p.score), chunk_id=str(p.id), payload=dict(p.payload or {}))
        for p in shard.query(request)
    ]


def _ids(shard: qe.EdgeShard, request: qe.QueryRequest) -> list[Scored]:
    return [(_key(p.id), float(p.score)) for p in shard.query(request)]


def _ranked_hits(shard: qe.EdgeShard, ranked: Sequence[Scored]) -> list[Hit]:
    records = shard.retrieve(
        [_point_id(key) for key, _ in ranked], with_payload=True, with_vector=False
    )
    found = {_key(r.id): r for r in records}
    return [
        Hit(score=score, chunk_id=str(found[key].id), payload=dict(found[key].payload or {}))
        for key, score in ranked
        if key in found
    ]


def _vectors(shard: qe.EdgeShard, keys: Sequence[Any]) -> dict[Any, list[float]]:
    records = shard.retrieve(
        [_point_id(key) for key in keys], with_payload=False, with_vector=[DENSE]
    )
    return {_key(r.id): dense_of(r.vector) for r in records}


def _scroll(shard: qe.EdgeShard, request: qe.ScrollRequest) -> tuple[list[dict[str, Any]], Any]:
    records, offset = shard.scroll(request)
    return [rec.payload or {} for rec in records], offset


def _add_missing_indexes(shard: qe.EdgeShard) -> None:
    """A shard created before a field was indexed (`groups`) gets its index when opened."""
    indexed = shard.info().payload_schema
    for field, kind in PAYLOAD_INDEXES.items():
        if field not in indexed:
            shard.update(qe.UpdateOperation.create_field_index(field, _INDEX_TYPES[kind]))


class EdgeBackend:
    """Qdrant Edge shards under `root/<collection>`, opened once and kept open."""

    def __init__(self, root: Path, config: StoreConfig, *, max_threads: int = 4) -> None:
        self._root = root
        self._config = config
        self._shards: dict[str, qe.EdgeShard] = {}
        self._open_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._dirty: set[str] = set()
        self._min_free = config.min_free_mb * 2**20
        self._index_bytes: dict[str, int] = {}  # what indexing at commit may need, per shard

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    def _path(self, collection: str) -> Path:
        return self._root / check_collection_name(collection)

    def shard(self, collection: str) -> qe.EdgeShard:
        """The open shard (bench/search.py scrolls it with vectors)."""
        shard = self._shards.get(collection)
        if shard is None:
            raise CollectionNotFound(collection)
        return shard

    def _layout(self, collection: str) -> Layout | None:
        meta_file = self._path(collection) / _META
        with storage_faults(f"read collection '{collection}'", meta_file.parent):
            if not meta_file.is_file():
                return None
            meta = json.loads(meta_file.read_text())
        return Layout(dim=meta.get("dim"), distance=meta.get("distance"), model=meta.get("model"))

    async def layout(self, collection: str) -> Layout | None:
        return await self._run(self._layout, collection)

    def _open(self, collection: str, create: bool) -> None:
        with self._open_lock:  # a shard is loaded (or created) once
            if collection in self._shards:
                return
            path = self._path(collection)
            with storage_faults(f"open collection '{collection}'", path):
                if (path / _META).is_file():
                    shard = self._load(collection, path)
                    _add_missing_indexes(shard)
                elif create:
                    shard = self._create(collection, path)
                else:
                    raise CollectionNotFound(collection)
            self._shards[collection] = shard

    @staticmethod
    def _load(collection: str, path: Path) -> qe.EdgeShard:
        try:
            return qe.EdgeShard.load(str(path))
        except Exception as exc:  # the engine raises a bare Exception
            if "WouldBlock" in str(exc):  # another process holds the shard's WAL lock
                raise StoreLocked(collection, str(path)) from exc
            raise

    def _create(self, collection: str, path: Path) -> qe.EdgeShard:
        # A folder without the meta file is a create that died half-way: start over.
        shutil.rmtree(path, ignore_errors=True)
        check_space(f"create collection '{collection}'", path, self._min_free)
        c = self._config
        meta = {"dim": c.dim, "distance": "cosine", "model": c.embedding_model, "sparse": SPARSE}
        shard = None
        try:
            path.mkdir(parents=True)
            shard = qe.EdgeShard.create(str(path), edge_config(self._config))
            for field, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(field, _INDEX_TYPES[kind]))
            shard.flush()
            write_atomically(path / _META, json.dumps(meta))
        except BaseException:
            # No half-made shard stays behind taking space (the next create would start over).
            if shard is not None:
                with suppress(Exception):
                    shard.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        return shard

    async def open(self, collection: str, *, create: bool) -> None:
        await self._run(self._open, collection, create)

    async def collections(self) -> list[str]:
        with storage_faults("list the collections", self._root):
            if not self._root.is_dir():
                return []
            return [p.name for p in self._root.iterdir() if (p / _META).is_file()]

    def _check_write(self, collection: str, points: int = 0) -> str:
        """What a write does, in an error. Refused before it starts unless the disk keeps room
        for it and for indexing at commit (a rewrite of the shard's segments): a full disk
        stops a run before it writes, not between its writes and their index."""
        what, path = f"write to collection '{collection}'", self._path(collection)
        if collection not in self._index_bytes:
            self._index_bytes[collection] = allocated_bytes(path)
        written = points * (_POINT_BYTES + self._config.dim * 8)
        check_space(what, path, self._min_free + self._index_bytes[collection] + written)
        self._index_bytes[collection] += written  # the shard grows: so does its index rewrite
        return what

    def _drop(self, collection: str) -> None:
        path = self._path(collection)
        with self._open_lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            self._dirty.discard(collection)
            self._index_bytes.pop(collection, None)
            shutil.rmtree(path, ignore_errors=True)

    async def drop(self, collection: str) -> None:
        await self._run(self._drop, collection)

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None:
        shard = self.shard(collection)
        operation = qe.UpdateOperation.upsert_points([edge_point(p) for p in points])
        extra = sum(len(p.chunk.text) for p in points) * 4  # UTF-8 text in the WAL and payload
        what = await self._run(self._check_write, collection, len(points) + extra // _POINT_BYTES)
        with storage_faults(what, self._path(collection)):
            await self._run(shard.update, operation)
        self._dirty.add(collection)

    async def delete(self, collection: str, must: Filters, must_not: Filters | None) -> None:
        shard = self.shard(collection)
        flt = edge_filter(must, must_not)
        if flt is None:  # nothing selected
            return
        what = await self._run(self._check_write, collection)
        with storage_faults(what, self._path(collection)):
            await self._run(shard.update, qe.UpdateOperation.delete_points_by_filter(flt))
        self._dirty.add(collection)

    async def set_payload(self, collection: str, must: Filters, payload: dict[str, Any]) -> None:
        shard = self.shard(collection)
        flt = edge_filter(must)
        if flt is None:  # nothing selected
            return
        what = await self._run(self._check_write, collection)
        with storage_faults(what, self._path(collection)):
            await self._run(shard.update, qe.UpdateOperation.set_payload_by_filter(flt, payload))
        self._dirty.add(collection)

    async def scroll(
        self, collection: str, selection: Selection, *, offset: Any, limit: int
    ) -> tuple[list[dict[str, Any]], Any]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=edge_select(selection),
            with_payload=STATE_FIELDS,
            with_vector=False,
        )
        return await self._run(_scroll, self.shard(collection), request)

    async def count(self, collection: str, selection: Selection) -> int:
        request = qe.CountRequest(filter=edge_select(selection), exact=True)
        return int(await self._run(self.shard(collection).count, request))

    async def query_hits(self, collection: str, query: Nearest) -> list[Hit]:
        return await self._run(_hits, self.shard(collection), edge_request(query))

    async def query_ids(self, collection: str, query: Nearest) -> list[Scored]:
        return await self._run(_ids, self.shard(collection), edge_request(query))

    async def retrieve_hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        return await self._run(_ranked_hits, self.shard(collection), ranked)

    async def retrieve_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        return await self._run(_vectors, self.shard(collection), ids)

    def _finish(self, collection: str) -> None:
        shard, path = self._shards[collection], self._path(collection)
        what = f"index collection '{collection}'"
        # Optimizing rewrites the segments: as much again as the shard takes may be needed.
        check_space(what, path, self._min_free + allocated_bytes(path))
        with storage_faults(what, path):
            shard.optimize()  # Edge has no background optimizer: build the HNSW index now.
            shard.flush()

    async def commit(self, collection: str) -> None:
        """Flush and index what this process wrote (called at the end of an ingest run)."""
        if collection in self._dirty:
            await self._run(self._finish, collection)
            self._dirty.discard(collection)
        self._index_bytes.pop(collection, None)

    def _footprint(self, collection: str) -> Footprint:
        path = self._path(collection)
        with storage_faults(f"read collection '{collection}'", path):
            size = allocated_bytes(path)
            written = path / _WRITTEN
            at = json.loads(written.read_text())["at"] if written.is_file() else None
        return Footprint(size_bytes=size, written_at=datetime.fromisoformat(at) if at else None)

    async def footprint(self, collection: str) -> Footprint:
        """The shard's folder under the data dir (blocks in use) and the time in its side file."""
        return await self._run(self._footprint, collection)

    def _mark_written(self, collection: str, at: datetime) -> None:
        path = self._path(collection)
        with storage_faults(f"write to collection '{collection}'", path):
            write_atomically(path / _WRITTEN, json.dumps({"at": at.isoformat()}))

    async def mark_written(self, collection: str, at: datetime) -> None:
        await self._run(self._mark_written, collection, at)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        with self._open_lock:
            shards, self._shards = self._shards, {}
            failed: Exception | None = None
            for collection, shard in shards.items():
                try:  # every shard is closed, even after another failed to flush
                    with storage_faults(f"flush collection '{collection}'", self._path(collection)):
                        shard.flush()
                except Exception as exc:
                    failed = failed or exc
                finally:
                    shard.close()
            if failed is not None:
                raise failed


class EdgeStore(QdrantStore):
    """The VectorStore on Qdrant Edge; `shards` is its backend (calls run in worker threads)."""

    def __init__(self, root: Path, config: StoreConfig, *, max_threads: int = 4) -> None:
        self.shards = EdgeBackend(root, config, max_threads=max_threads)
        super().__init__(self.shards, config)
