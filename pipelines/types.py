"""Domain types shared by every layer: chunks, hits, filters, generation events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from pipelines.access import GROUPS_FIELD

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)
# A query's dense vector, or an async function that computes it: a store may start the sparse
# side of a hybrid search while the query is still being embedded.
DenseQuery = list[float] | Callable[[], Awaitable[list[float]]]
Scalar = str | int | float | bool
# Payload fields the store keeps for itself (a file's server path for the ingest job; a
# document's access list, which the store applies from the caller's Access): never in a hit,
# a source or a listing a client gets, and no filter field a client may use.
PRIVATE_FIELDS = frozenset({"path", GROUPS_FIELD})


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` without its PRIVATE_FIELDS."""
    return {k: v for k, v in payload.items() if k not in PRIVATE_FIELDS}


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


def with_heading(heading: str, text: str) -> str:
    """What the dense and sparse encoders see for a chunk: its heading, then its text."""
    return f"{heading}\n\n{text}" if heading else text


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a document, with everything needed to cite it."""

    chunk_id: str
    doc_id: str
    collection: str
    source: str
    title: str
    text: str
    chunk_index: int
    chunk_count: int
    char_start: int
    char_end: int
    content_hash: str
    page: int | None = None
    ingested_at: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # Context embedded ahead of `text` (the document title when the text lacks it).
    heading: str = ""
    # The file's absolute server path (CLI ingest; "" for an upload). Stored for the ingest
    # job's own lookups and prune only: never shown to a client (see PRIVATE_FIELDS).
    path: str = ""
    # The document's access list, sorted (empty: public); the store matches a caller's
    # groups against it (pipelines/access.py). Never shown to a client.
    groups: tuple[str, ...] = ()

    @property
    def embedding_text(self) -> str:
        """What the dense and sparse encoders see: the heading, then the text."""
        return with_heading(self.heading, self.text)

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "doc_id": self.doc_id,
            "collection": self.collection,
            "source": self.source,
            "title": self.title,
            "text": self.text,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "content_hash": self.content_hash,
            "ingested_at": self.ingested_at,
            "page": self.page,
            GROUPS_FIELD: list(self.groups),
        }
        if self.path:
            payload["path"] = self.path
        payload.update(
            {k: v for k, v in self.metadata.items() if k not in payload and k not in PRIVATE_FIELDS}
        )
        return payload


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: Chunk
    dense: list[float]
    sparse: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    score: float
    chunk_id: str
    payload: dict[str, Any]
    # The hit's raw side scores, absolute (not normalized per query): its dense cosine and its
    # BM25 score, None where the search did not compute that side. The relevance floor's
    # calibration reads them (pipelines/ranking.py `Calibration`).
    dense_score: float | None = None
    sparse_score: float | None = None

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))

    @property
    def doc_id(self) -> str:
        return str(self.payload.get("doc_id", ""))


@dataclass(frozen=True, slots=True)
class Range:
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


# field -> exact value, any of several values, or a numeric range; all conditions must hold.
Filters = dict[str, Scalar | list[Scalar] | Range]


@dataclass(slots=True)
class DocState:
    """What the store holds for one document: enough to decide skip / replace / resume."""

    doc_id: str
    source: str
    chunks: int = 0
    hashes: set[str] = field(default_factory=set)
    expected_chunks: int = 0
    path: str = ""  # the file's server path ("" for an upload or an older collection)
    # Its access list, sorted (() public, also in an older collection without the field);
    # None: its chunks disagree (a change of its groups that did not reach every chunk).
    groups: tuple[str, ...] | None = ()
    mixed: bool = False  # its chunks disagree on source or path (an interrupted relabel)

    def is_complete(self, content_hash: str) -> bool:
        return self.hashes == {content_hash} and self.chunks == self.expected_chunks

    def is_current(self, content_hash: str, source: str, path: str) -> bool:
        """Complete, and every chunk already carries this source and path: nothing to embed
        (its groups may still need to be set: `groups`)."""
        return (
            self.is_complete(content_hash)
            and not self.mixed
            and (self.source, self.path) == (source, path)
        )


@dataclass(frozen=True, slots=True)
class CollectionStats:
    """A collection as one caller sees it. `documents` and `chunks` are those it may read;
    `size_bytes` and `last_ingest_at` describe the whole collection, so a caller that cannot
    read all of it gets None for both (they would tell it about documents it may not see)."""

    name: str
    documents: int
    chunks: int
    # Disk the collection takes (None: the backend cannot tell, e.g. a Qdrant server).
    size_bytes: int | None = None
    # UTC time of the last write that changed it (None: never written since it was created,
    # or last written before the store kept the time).
    last_ingest_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """A client's sampling options beyond temperature, None (or no stop words) where unset.
    The names are OpenAI's and vLLM's `SamplingParams`' alike, so that each generator passes
    `options()` on as it is: only what the client set, the backend's defaults otherwise."""

    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def options(self) -> dict[str, Any]:
        """The options the client set, by name (stop words as a list)."""
        values: dict[str, Any] = {
            "seed": self.seed,
            "top_p": self.top_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        options = {name: value for name, value in values.items() if value is not None}
        if self.stop:
            options["stop"] = list(self.stop)
        return options


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float
    model: str | None = None
    request_id: str = ""
    sampling: Sampling = Sampling()


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A streamed piece of the answer; the last one carries finish_reason and usage."""

    text: str
    finish_reason: Literal["stop", "length"] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
