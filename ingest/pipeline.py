"""The ingestion job: discover → load/chunk (background thread) → embed in batches → upsert.

Idempotent and resumable because the store is the only state: every point carries its
document's content hash and chunk count, so a document is "done" exactly when the store
holds all of its chunks with the current hash and nothing else.

A document's access list (`groups`: the run's, or a corpus line's own) is on every chunk. It
is not part of the content hash: a document whose text is unchanged but whose groups changed
gets its new groups on every chunk in one store operation (`set_document_groups`), without
re-embedding, so no chunk keeps the old groups while the others are rewritten.

What a run did goes to its `Telemetry` (the service's Prometheus metrics, the CLI's textfile or
push): each batch's chunks with their embedder tokens and the time the model took, as it is
stored; the documents by outcome when the run ends, however it ends.

Each stored document's file (not a corpus line's) is kept as it was (`ingest/originals.py`)
once the run has stored everything; a pruned document's copy goes with it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, get_args

import anyio
import anyio.lowlevel

from ingest.chunking import Chunker
from ingest.loaders import (
    LoadedDocument,
    LoadError,
    LoadFailure,
    discover_named,
    load_file,
    public_failure,
    renamed,
    skipped_types,
)
from ingest.originals import Originals
from pipelines.access import FULL_ACCESS, check_groups
from pipelines.identity import chunk_point_id, content_hash, document_id
from pipelines.ports import Embedder, SparseEncoder, VectorStore
from pipelines.telemetry import NO_TELEMETRY, IngestOutcome, Telemetry
from pipelines.types import Chunk, DocState, EmbeddedChunk, Filters, Scalar, SparseVector

log = logging.getLogger(__name__)
_END = object()
# Up to this many files, a run reads back only their documents' states (by path, or by source
# for uploads and for collections older than the `path` field); more, or
# --prune (which must see every document), read the whole collection once.
STATE_LOOKUP_MAX_FILES = 1000


class Progress(Protocol):
    """What the job reports while it runs (the CLI draws a bar; the API logs)."""

    def files_total(self, n: int) -> None: ...

    def file_done(self, source: str) -> None: ...

    def chunks_done(self, n: int) -> None: ...


class NoProgress:
    def files_total(self, n: int) -> None: ...

    def file_done(self, source: str) -> None: ...

    def chunks_done(self, n: int) -> None: ...


@dataclass(slots=True)
class IngestSummary:
    collection: str
    files: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    # Files inside the folders left unread for their type, by extension: {'.csv': 3}.
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Prepared:
    doc_id: str
    doc: LoadedDocument
    chunks: list[Chunk]
    tokens: list[int] = field(default_factory=list)  # each chunk's, as the embedder counts


@dataclass(slots=True)
class _FileMark:
    source: str


@dataclass(slots=True)
class _Regroup:
    """A stored document, current but for its groups: set them on its chunks in place."""

    doc_id: str
    groups: tuple[str, ...]
    original: Path | None


class IngestPipeline:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        chunker: Chunker,
        *,
        batch_size: int = 256,
        queue_size: int = 1024,
        state_lookup_max_files: int = STATE_LOOKUP_MAX_FILES,
        originals: Originals | None = None,
    ) -> None:
        self._originals = originals
        self._store = store
        self._embedder = embedder
        self._sparse = sparse
        self._chunker = chunker
        self._batch_size = batch_size
        self._queue_size = queue_size
        self.state_lookup_max_files = state_lookup_max_files
        self._recipe = f"{embedder.name}|{chunker.chunk_tokens}|v2"  # v2: title headings

    # -- loading and chunking (runs in a background thread, overlapping embedding) ----------

    def _prepare(
        self, collection: str, doc: LoadedDocument, groups: tuple[str, ...], now: str
    ) -> _Prepared:
        doc_id = document_id(collection, doc.key)
        digest = content_hash(doc.text, self._recipe)
        pieces = self._chunker.split(doc)
        chunks = [
            Chunk(
                chunk_id=chunk_point_id(doc_id, i),
                doc_id=doc_id,
                collection=collection,
                source=doc.source,
                path=doc.path,
                title=doc.title,
                text=p.text,
                chunk_index=i,
                chunk_count=len(pieces),
                char_start=p.char_start,
                char_end=p.char_end,
                content_hash=digest,
                page=p.page,
                ingested_at=now,
                metadata=doc.metadata,
                heading=p.heading,
                groups=groups,
            )
            for i, p in enumerate(pieces)
        ]
        # Counted here, in the loader thread, while the model embeds the previous batch.
        tokens = [self._embedder.count_tokens(c.embedding_text) for c in chunks]
        return _Prepared(doc_id, doc, chunks, tokens)

    def _produce(
        self,
        files: list[Path],
        collection: str,
        states: dict[str, DocState],
        out: queue.Queue[object],
        failures: list[LoadFailure],
        seen: set[str],
        stop: threading.Event,
        names: Mapping[str, str],
        uploads: set[str],
        run_groups: tuple[str, ...],
    ) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            for path in files:
                if stop.is_set():
                    return
                file = str(path)
                name = names.get(file, path.name)
                try:
                    for doc in load_file(path, failures):
                        doc.source = renamed(doc.source, file, name)
                        if file in uploads:  # its name is its identity: no server path kept
                            doc.key = renamed(doc.key, file, name)
                        else:  # its id stays that of its path (as before display names)
                            doc.path = file
                        doc_id = document_id(collection, doc.key)
                        seen.add(doc_id)
                        state = states.get(doc_id)
                        groups = run_groups if doc.groups is None else doc.groups
                        # Cheap skip before chunking: same text + recipe, all chunks present,
                        # and already labelled so (an older collection's absolute source is
                        # rewritten once, under the same ids); other groups: set in place.
                        if state is not None and state.is_current(
                            content_hash(doc.text, self._recipe), doc.source, doc.path
                        ):
                            regroup = _Regroup(doc_id, groups, doc.original)
                            out.put(
                                regroup if state.groups != groups else _Prepared(doc_id, doc, [])
                            )
                            continue
                        prepared = self._prepare(collection, doc, groups, now)
                        if not prepared.chunks:
                            failures.append(LoadFailure(doc.key, "no text content"))
                            continue
                        out.put(prepared)
                except LoadError as exc:
                    failures.append(LoadFailure(str(path), str(exc)))
                except Exception as exc:  # one bad file must not sink the run
                    log.exception("unexpected error loading %s", path)
                    failures.append(LoadFailure(str(path), f"{type(exc).__name__}: {exc}"))
                out.put(_FileMark(str(path)))
        finally:
            out.put(_END)

    def _encode(self, texts: list[str]) -> tuple[list[list[float]], list[SparseVector], float]:
        """Dense and sparse vectors, and the seconds the dense model took (tokens/s is its)."""
        started = time.perf_counter()
        dense = self._embedder.embed_documents(texts)
        seconds = time.perf_counter() - started
        return dense, self._sparse.encode_documents(texts), seconds

    # -- the run --------------------------------------------------------------------------

    async def run(
        self,
        paths: Sequence[Path],
        collection: str,
        *,
        prune: bool = False,
        progress: Progress | None = None,
        names: Mapping[Path, str] | None = None,
        groups: Sequence[str] = (),
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> IngestSummary:
        """Ingest the files under `paths` into `collection`. A document's source is its file's
        display name (its path relative to the folder in `paths` it was found under, or its
        file name), never a server path; its id stays derived from that path. `names` gives
        files a source that is also their identity (uploads: the client's file name, so the
        document keeps its identity across uploads from different temporary files).
        `groups`: every document's access list (empty: public) unless a corpus line gives
        its own; a bad group name is InvalidInput before anything is read. `telemetry`
        hears what the run did (the documents by outcome also when it fails part-way)."""
        run_groups = check_groups(groups)
        summary = IngestSummary(collection=collection)
        failures: list[LoadFailure] = []
        try:
            args = (prune, progress or NoProgress(), names, run_groups, telemetry)
            return await self._run(paths, summary, failures, *args)
        finally:
            s = summary
            counts = (s.added, s.updated, s.unchanged, s.deleted, len(failures))
            for outcome, count in zip(get_args(IngestOutcome), counts, strict=True):
                telemetry.ingest_documents(collection, outcome, count)

    async def _run(
        self,
        paths: Sequence[Path],
        summary: IngestSummary,
        failures: list[LoadFailure],
        prune: bool,
        progress: Progress,
        names: Mapping[Path, str] | None,
        run_groups: tuple[str, ...],
        telemetry: Telemetry,
    ) -> IngestSummary:
        started = time.perf_counter()
        collection = summary.collection
        await self._store.ensure_collection(collection, create=True)
        files, display, found = await anyio.to_thread.run_sync(discover_named, list(paths))
        failures.extend(found)
        summary.skipped = await anyio.to_thread.run_sync(skipped_types, list(paths))
        given = {str(Path(p).resolve()): n for p, n in (names or {}).items()}  # noqa: ASYNC240
        renames = {**display, **given}
        uploads = set(given)
        states: dict[str, DocState] = {}
        if prune or len(files) > self.state_lookup_max_files:
            states = await self._store.document_states(collection, access=FULL_ACCESS)
        elif files:  # only these files' documents: ms, where reading 1M chunks takes ~30 s
            on_disk: list[Scalar] = [str(f) for f in files if str(f) not in uploads]
            # Uploads by their name; files by their path, and by their path as the source of
            # a collection older than the `path` field.
            sources: list[Scalar] = [given.get(str(f), str(f)) for f in files]
            if on_disk:
                by_path: Filters = {"path": on_disk}
                states = await self._store.document_states(collection, by_path, access=FULL_ACCESS)
            by_source: Filters = {"source": sources}
            states.update(
                await self._store.document_states(collection, by_source, access=FULL_ACCESS)
            )
        summary.files = len(files)
        progress.files_total(len(files))

        q: queue.Queue[object] = queue.Queue(maxsize=self._queue_size)
        seen: set[str] = set()
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce,
            args=(files, collection, states, q, failures, seen, stop, renames, uploads, run_groups),
            name="ingest-loader",
            daemon=True,
        )
        producer.start()

        batch: list[Chunk] = []
        batch_tokens = 0
        pending: dict[str, int] = {}  # doc_id -> chunks not yet written
        finished_docs: list[str] = []

        async def flush() -> None:
            nonlocal batch_tokens
            if not batch:
                return
            texts = [c.embedding_text for c in batch]
            dense, sparse, seconds = await anyio.to_thread.run_sync(self._encode, texts)
            await self._store.upsert(
                collection,
                [EmbeddedChunk(c, d, s) for c, d, s in zip(batch, dense, sparse, strict=True)],
            )
            telemetry.ingest_embedded(collection, len(batch), batch_tokens, seconds)
            batch_tokens = 0
            for c in batch:
                pending[c.doc_id] -= 1
                if pending[c.doc_id] == 0:
                    finished_docs.append(c.doc_id)
            summary.chunks += len(batch)
            log.debug("upserted %d chunks (%d this run)", len(batch), summary.chunks)
            progress.chunks_done(len(batch))
            batch.clear()
            # Old chunks go only once every new chunk of the document is stored.
            for doc_id in finished_docs:
                del pending[doc_id]
                if doc_id in states:
                    await self._store.delete_stale_chunks(collection, doc_id, hashes[doc_id])
            finished_docs.clear()

        hashes: dict[str, str] = {}
        kept: dict[str, Path] = {}  # doc_id -> the file to keep, once the run stored it all
        try:
            while True:
                try:  # usually the loader is ahead: take what is queued without a thread hop
                    item = q.get_nowait()
                    await anyio.lowlevel.checkpoint()  # stay cancellable while draining
                except queue.Empty:
                    item = await anyio.to_thread.run_sync(q.get)
                if item is _END:
                    break
                if isinstance(item, _FileMark):
                    progress.file_done(renames.get(item.source, item.source))
                    continue
                if isinstance(item, _Regroup):
                    await self._store.set_document_groups(collection, item.doc_id, item.groups)
                    summary.updated += 1
                    if item.original is not None:
                        kept[item.doc_id] = item.original
                    continue
                assert isinstance(item, _Prepared)
                if item.doc.original is not None:
                    kept[item.doc_id] = item.doc.original
                if not item.chunks:
                    summary.unchanged += 1
                    continue
                if item.doc_id in states:
                    summary.updated += 1
                else:
                    summary.added += 1
                hashes[item.doc_id] = item.chunks[0].content_hash
                pending[item.doc_id] = len(item.chunks)
                for chunk, tokens in zip(item.chunks, item.tokens, strict=True):
                    batch.append(chunk)
                    batch_tokens += tokens
                    if len(batch) >= self._batch_size:
                        await flush()
            await flush()
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    await anyio.sleep(0.01)

        if prune:
            failed_sources = {f.source for f in failures}
            roots = [Path(p).resolve() for p in paths]  # noqa: ASYNC240 (no I/O without symlinks)
            summary.deleted = await self._prune(
                collection,
                states,
                seen | {d for d, st in states.items() if (st.path or st.source) in failed_sources},
                roots,
            )
        await self._store.commit(collection)
        if self._originals is not None:
            await anyio.to_thread.run_sync(self._originals.keep, collection, kept)
        summary.failed = [public_failure(f, renames) for f in failures]
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    async def _prune(
        self, collection: str, states: dict[str, DocState], seen: set[str], roots: list[Path]
    ) -> int:
        """Delete documents under the given paths not seen in this run, or whose file is gone."""

        def is_gone(state: DocState) -> bool:
            source = Path(state.path or state.source)  # an older collection: its path as source
            if not source.is_absolute():  # uploads are not files: only their API deletes them
                return False
            under_root = any(source == r or r in source.parents for r in roots)
            return under_root or not source.exists()

        candidates = [st for doc_id, st in states.items() if doc_id not in seen]
        gone = await anyio.to_thread.run_sync(
            lambda: [st.doc_id for st in candidates if is_gone(st)]
        )
        await self._store.delete_documents(collection, gone)
        if self._originals is not None:
            await anyio.to_thread.run_sync(self._originals.remove, collection, gone)
        return len(gone)
