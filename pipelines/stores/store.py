"""QdrantStore: the VectorStore written once; a backend supplies translation and I/O only.

The store owns every decision: the collection check, what a write or a delete selects, the
state scroll, the counts, the query parameters and the search plan (pipelines/ranking.py).
A backend (stores/edge.py, stores/server.py) translates the store's terms (`Filters`, a
read's `Selection`, `EmbeddedChunk`, the `Nearest` queries of stores/terms.py) into its
engine's and does the I/O, as qdrant-client's `QdrantLocal` and `QdrantRemote` do behind one
`QdrantBase`. Every read takes the caller's `Access`: the store checks the collection before
it touches the backend and puts the document condition into the engine's query itself.

The time a collection last changed is the store's to keep, as every backend's engine knows
only points: a write marks its collection, and the commit that ends the run records the time
through the backend (Edge: a file beside the shard; a server: the collection's metadata), so
reading it costs one small read per collection, never a scroll over its points.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pipelines.access import GROUPS_FIELD, Access
from pipelines.errors import CollectionNotFound, RagError, SchemaMismatch
from pipelines.ranking import Query, Scored, ranked_search, rescore_oversampling
from pipelines.stores.config import StoreConfig
from pipelines.stores.schema import Layout, check_collection_name
from pipelines.stores.terms import (
    DenseNearest,
    Nearest,
    Selection,
    SparseNearest,
    check_filters,
)
from pipelines.types import (
    CollectionStats,
    DenseQuery,
    DocState,
    EmbeddedChunk,
    Filters,
    Hit,
    SearchMode,
    SparseVector,
)

SCROLL_PAGE = 1024


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a backend can tell of a whole collection besides its points."""

    size_bytes: int | None  # disk it takes; None: the backend cannot tell
    written_at: datetime | None  # the last change recorded (`mark_written`); None: none yet


class QdrantBackend(Protocol):
    """One Qdrant engine's I/O in the store's terms. The store validates names and checks a
    collection (`layout`, `open`) before it reads or writes it."""

    async def layout(self, collection: str) -> Layout | None:
        """The existing collection's dense vectors; None if there is no such collection."""
        ...

    async def open(self, collection: str, *, create: bool) -> None:
        """Make the collection ready for use; `create`: it does not exist yet, create it."""
        ...

    async def collections(self) -> list[str]: ...

    async def drop(self, collection: str) -> None:
        """Delete the collection if it exists."""
        ...

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None: ...

    async def delete(self, collection: str, must: Filters, must_not: Filters | None) -> None:
        """Delete the points matching every `must` condition and no `must_not` one."""
        ...

    async def set_payload(self, collection: str, must: Filters, payload: dict[str, Any]) -> None:
        """Set these payload fields (others kept) on every point matching `must`, in one
        engine operation."""
        ...

    async def scroll(
        self, collection: str, selection: Selection, *, offset: Any, limit: int
    ) -> tuple[list[dict[str, Any]], Any]:
        """One page of STATE_FIELDS payloads and the next page's offset (None: the last)."""
        ...

    async def count(self, collection: str, selection: Selection) -> int: ...

    async def query_hits(self, collection: str, query: Nearest) -> list[Hit]: ...

    async def query_ids(self, collection: str, query: Nearest) -> list[Scored]:
        """Ids (in the form `retrieve_*` takes back) and scores, best first."""
        ...

    async def retrieve_hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        """The ranked points with their payloads, in order (points deleted since: skipped)."""
        ...

    async def retrieve_vectors(
        self, collection: str, ids: Sequence[Any]
    ) -> dict[Any, list[float]]: ...

    async def commit(self, collection: str) -> None: ...

    async def footprint(self, collection: str) -> Footprint:
        """The collection's size on disk and its last recorded change: a read of the
        backend's own bookkeeping, whatever the number of points."""
        ...

    async def mark_written(self, collection: str, at: datetime) -> None:
        """Record that the collection changed at `at`, durably (read back by `footprint`)."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


# -- the store ------------------------------------------------------------------------------


def _groups_of(value: Any) -> tuple[str, ...]:
    """A stored access list as DocState holds it (absent: an older collection's, public)."""
    if isinstance(value, list):
        return tuple(sorted({str(v) for v in value}))
    return () if value is None else (str(value),)


def _add_states(states: dict[str, DocState], payloads: Iterable[dict[str, Any]]) -> None:
    """Fold scrolled payloads (STATE_FIELDS) into per-document states."""
    for pl in payloads:
        doc_id = str(pl.get("doc_id"))
        st = states.get(doc_id)
        source, path = str(pl.get("source")), str(pl.get("path") or "")
        groups = _groups_of(pl.get(GROUPS_FIELD))
        if st is None:
            st = states[doc_id] = DocState(doc_id=doc_id, source=source, path=path, groups=groups)
        else:
            if (st.source, st.path) != (source, path):
                st.mixed = True
            if st.groups != groups:
                st.groups = None
        st.chunks += 1
        st.hashes.add(str(pl.get("content_hash")))
        st.expected_chunks = int(pl.get("chunk_count") or 0)


class QdrantStore:
    """The VectorStore over one Qdrant backend, configured by a StoreConfig."""

    def __init__(self, backend: QdrantBackend, config: StoreConfig) -> None:
        self.config = config
        self._backend = backend
        self._ready: set[str] = set()  # checked and open: no backend round trip to use them
        # Collections written since their last commit, and when (recorded at the commit).
        self._written: dict[str, datetime] = {}

    async def ensure_collection(self, collection: str, *, create: bool) -> None:
        if collection in self._ready:  # Edge: no worker-thread hop on every search
            return
        check_collection_name(collection)
        layout = await self._backend.layout(collection)
        if layout is None and not create:
            raise CollectionNotFound(collection)
        if layout is not None and not layout.fits(self.config.dim):
            dim, model = self.config.dim, self.config.embedding_model
            raise SchemaMismatch(layout.mismatch(collection, dim, model))
        await self._backend.open(collection, create=layout is None)
        self._ready.add(collection)

    @contextmanager
    def _known(self, collection: str) -> Iterator[None]:
        """A collection the backend no longer has (a server back without its data) is
        forgotten, so the next use checks it again instead of trusting the cache."""
        try:
            yield
        except CollectionNotFound:
            self._ready.discard(collection)
            raise

    async def list_collections(self) -> list[str]:
        return sorted(await self._backend.collections())

    async def drop_collection(self, collection: str) -> None:
        check_collection_name(collection)
        self._ready.discard(collection)
        self._written.pop(collection, None)
        await self._backend.drop(collection)

    async def upsert(self, collection: str, points: Sequence[EmbeddedChunk]) -> None:
        if not points:
            return
        await self.ensure_collection(collection, create=True)
        try:
            with self._known(collection):
                await self._backend.upsert(collection, points)
        except CollectionNotFound:  # gone since it was checked: create it again, once
            await self.ensure_collection(collection, create=True)
            await self._backend.upsert(collection, points)
        self._wrote(collection)

    async def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        if not doc_ids:
            return
        await self.ensure_collection(collection, create=False)
        await self._backend.delete(collection, {"doc_id": list(doc_ids)}, None)
        self._wrote(collection)

    async def delete_stale_chunks(self, collection: str, doc_id: str, keep_hash: str) -> None:
        await self.ensure_collection(collection, create=False)
        await self._backend.delete(collection, {"doc_id": doc_id}, {"content_hash": keep_hash})
        self._wrote(collection)

    async def set_document_groups(
        self, collection: str, doc_id: str, groups: Sequence[str]
    ) -> None:
        await self.ensure_collection(collection, create=False)
        payload = {GROUPS_FIELD: sorted(set(groups))}
        await self._backend.set_payload(collection, {"doc_id": doc_id}, payload)
        self._wrote(collection)

    def _wrote(self, collection: str) -> None:
        self._written[collection] = datetime.now(UTC)

    # -- reads: each checks the caller's access first and selects only what it may see ----

    async def _readable(self, collection: str, access: Access) -> None:
        access.check(collection)  # before the backend: an out-of-scope name is never looked up
        await self.ensure_collection(collection, create=False)

    async def document_states(
        self, collection: str, filters: Filters | None = None, *, access: Access
    ) -> dict[str, DocState]:
        await self._readable(collection, access)
        selection = Selection(filters, access.groups)
        states: dict[str, DocState] = {}
        offset: Any = None
        while True:
            with self._known(collection):
                payloads, offset = await self._backend.scroll(
                    collection, selection, offset=offset, limit=SCROLL_PAGE
                )
            _add_states(states, payloads)
            if offset is None:
                return states

    async def stats(self, collection: str, *, access: Access) -> CollectionStats:
        await self._readable(collection, access)
        with self._known(collection):
            chunks = await self._backend.count(collection, Selection(None, access.groups))
            # Each document's first chunk is its chunk 0.
            selection = Selection({"chunk_index": 0}, access.groups)
            docs = await self._backend.count(collection, selection)
            # The size and the time are the whole collection's: only for a caller who reads
            # all of it (every document, or every one there is now: one more count).
            whole = access.groups is None or chunks == await self._backend.count(
                collection, Selection(None, None)
            )
            if not whole:
                return CollectionStats(name=collection, documents=docs, chunks=chunks)
            footprint = await self._backend.footprint(collection)
        pending = self._written.get(collection)  # written here, not yet committed
        written = [t for t in (footprint.written_at, pending) if t is not None]
        return CollectionStats(
            name=collection,
            documents=docs,
            chunks=chunks,
            size_bytes=footprint.size_bytes,
            last_ingest_at=max(written, default=None),
        )

    async def count(
        self, collection: str, filters: Filters | None = None, *, access: Access
    ) -> int:
        access.check(collection)  # before the filters: out of scope is 403, whatever they say
        filters = check_filters(filters)
        await self.ensure_collection(collection, create=False)
        with self._known(collection):
            return await self._backend.count(collection, Selection(filters, access.groups))

    async def commit(self, collection: str) -> None:
        await self._backend.commit(collection)
        await self._record_write(collection)

    async def _record_write(self, collection: str) -> None:
        """The commit's time as the collection's last change, if this store wrote to it: the
        time of the commit, not of the write, so that of two processes writing one server's
        collection the later commit wins."""
        if collection not in self._written:
            return
        await self._backend.mark_written(collection, datetime.now(UTC))
        self._written.pop(collection, None)

    async def healthy(self) -> bool:
        return await self._backend.healthy()

    async def close(self) -> None:
        self._ready.clear()
        for collection in list(self._written):  # written without a commit (a run that failed)
            with suppress(RagError):  # the backend is going away: closing must not fail on it
                await self._record_write(collection)
        await self._backend.close()

    # -- search: ranked_search over the candidate queries below ----------------------------

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
        access.check(collection)
        filters = check_filters(filters)  # a client's (API, CLI): a bad one is InvalidInput
        await self.ensure_collection(collection, create=False)
        with self._known(collection):
            return await ranked_search(
                self,
                collection,
                dense=dense,
                sparse=sparse,
                k=k,
                mode=mode,
                filters=Selection(filters, access.groups),
                params=self.config.hybrid,
            )

    def nearest(
        self, query: Query, *, limit: int, k: int, filters: Selection, candidates: bool
    ) -> Nearest:
        """The query for `limit` nearest points of which k are kept; `candidates`: a list for
        fusion or MMR (ids and scores only, rescored only if `rescore_candidates`)."""
        if isinstance(query, SparseVector):
            return SparseNearest(query, limit, filters, with_payload=not candidates)
        c = self.config
        return DenseNearest(
            query,
            limit,
            filters,
            with_payload=not candidates,
            hnsw_ef=max(c.hnsw_ef, limit),
            exact=c.exact,
            quantized=c.quantization == "int8" and not c.exact,  # exact: the reference
            rescore=c.rescore_candidates or not candidates,
            oversampling=rescore_oversampling(c.oversampling, k, limit),
        )

    async def nearest_hits(
        self, collection: str, query: Query, *, limit: int, filters: Selection
    ) -> list[Hit]:
        nearest = self.nearest(query, limit=limit, k=limit, filters=filters, candidates=False)
        return await self._backend.query_hits(collection, nearest)

    async def nearest_ids(
        self, collection: str, query: Query, *, limit: int, k: int, filters: Selection
    ) -> list[Scored]:
        nearest = self.nearest(query, limit=limit, k=k, filters=filters, candidates=True)
        return await self._backend.query_ids(collection, nearest)

    async def hits(self, collection: str, ranked: Sequence[Scored]) -> list[Hit]:
        return await self._backend.retrieve_hits(collection, ranked)

    async def dense_vectors(self, collection: str, ids: Sequence[Any]) -> dict[Any, list[float]]:
        return await self._backend.retrieve_vectors(collection, ids)
