"""Citation integrity: `[n]` markers filtered as the answer streams, each cited sentence
matched to the span of its source that supports it best.

A `MarkerFilter` sees the answer's text chunks as they come and returns what may be shown: a
marker naming no source given to the model is removed (and counted), a valid one is kept and
its place in the shown text recorded; only a possible marker cut by a token boundary is held
back (at most one group's worth of characters). `AnswerCitations` is one answer's work: from
the start (concurrently with generation) it splits each source into sentences and embeds them
once, with adjacent pairs, and picks each source's best span for the question; after the
answer, each sentence carrying markers is embedded and matched against the windows of each
source it cites: support = the best cosine (the embedder's vectors are normalized), the span
= that window, `supported` = support at or above the calibrated floor
(`RAG_CITATIONS__SUPPORT_FLOOR`, bench/citation_support.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import numpy as np
import numpy.typing as npt

from pipelines.ports import Embedder
from pipelines.settings import CitationSettings
from pipelines.types import GenerationChunk

log = logging.getLogger(__name__)

# A marker group: `[1]`, `[1,2]`, `[1, 2]`; up to 8 numbers of up to 3 digits, so what is held
# back waiting for the rest of a marker is bounded (a `[` that can no longer become one, like
# `[a` or `[1234`, is released at once).
_MARKER = re.compile(r"\[(\d{1,3}(?:, ?\d{1,3}){0,7})\]")
_PARTIAL = re.compile(r"\[(?:\d{1,3}(?:, ?\d{1,3}){0,7}(?:, ?)?)?")
_NUMBER = re.compile(r"\d+")
# The end of a sentence: terminal punctuation (closing quotes/brackets and the markers that
# follow it belong to the sentence) before whitespace; a blank line; a line break before a
# list item. Not before a lower-case letter or a digit ("e.g. the", "Fig. 2"): see _split.
_END = re.compile(
    r"[.!?]+[\"'\u201d\u2019)\]]*(?:[ \t]*\[\d{1,3}(?:, ?\d{1,3})*\])*(?=\s|$)"
    r"|\n[ \t]*\n\s*"
    r"|\n(?=[ \t]*(?:[-*+\u2022]|\d{1,2}[.)])[ \t])"
)
_WORD = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class Span:
    """Characters `start`..`end` (end exclusive) of a text."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Marker:
    """A valid `[n]` as shown: `span` is its whole group (`[1, 2]`) in the emitted text."""

    n: int
    span: Span


@dataclass(frozen=True, slots=True)
class Citation:
    """Source `n` cited by the answer's sentence at `answer_span` (offsets into the emitted
    answer); `source_span` the window of the source's text that supports it best, `support`
    their cosine; `marker` the `[n]` group in the answer."""

    n: int
    chunk_id: str
    answer_span: Span
    source_span: Span | None
    support: float
    supported: bool
    marker: Span | None = None


@dataclass(frozen=True, slots=True)
class CitationReport:
    """An answer's citations, in order of the answer's text, and how many markers named no
    source given (removed from the text)."""

    citations: list[Citation] = field(default_factory=list)
    invalid: int = 0


NO_CITATIONS = CitationReport()


class MarkerFilter:
    """Streaming `[n]` filter: `feed(chunk)` → the text to emit now, `flush()` at the end.

    `text` is everything emitted so far; `markers` the valid markers with their spans in it;
    `invalid` the numbers removed (a group keeps its valid numbers: `[1, 7]` → `[1]`)."""

    def __init__(self, numbers: Collection[int]) -> None:
        self._valid = frozenset(numbers)
        self._pending = ""
        self._out: list[str] = []
        self._length = 0
        self.markers: list[Marker] = []
        self.invalid = 0

    @property
    def text(self) -> str:
        return "".join(self._out)

    def _emit(self, piece: str, into: list[str]) -> None:
        if piece:
            into.append(piece)
            self._out.append(piece)
            self._length += len(piece)

    def feed(self, chunk: str) -> str:
        buf, self._pending = self._pending + chunk, ""
        out: list[str] = []
        i = 0
        while i < len(buf):
            j = buf.find("[", i)
            if j < 0:
                self._emit(buf[i:], out)
                break
            self._emit(buf[i:j], out)
            match = _MARKER.match(buf, j)
            if match is not None:
                self._group(match, out)
                i = match.end()
            elif _PARTIAL.fullmatch(buf, j):
                self._pending = buf[j:]  # may still become a marker: wait for the next chunk
                break
            else:
                self._emit("[", out)
                i = j + 1
        return "".join(out)

    def flush(self) -> str:
        """The end of the answer: a held-back partial marker is text after all."""
        out: list[str] = []
        self._emit(self._pending, out)
        self._pending = ""
        return "".join(out)

    def _group(self, match: re.Match[str], out: list[str]) -> None:
        numbers = [int(x) for x in _NUMBER.findall(match.group(1))]
        valid = [n for n in dict.fromkeys(numbers) if n in self._valid]
        self.invalid += sum(1 for n in numbers if n not in self._valid)
        if not valid:
            return
        same = len(valid) == len(numbers)
        shown = match.group(0) if same else "[" + ", ".join(map(str, valid)) + "]"
        span = Span(self._length, self._length + len(shown))
        self._emit(shown, out)
        self.markers.extend(Marker(n, span) for n in valid)


def _trimmed(text: str, start: int, end: int) -> Span | None:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    tail = len(piece.rstrip())
    if tail <= lead:
        return None
    return Span(start + lead, start + tail)


def sentences(text: str) -> list[Span]:
    """The sentences of `text` as trimmed spans, in order (none for blank text)."""
    spans: list[Span] = []
    start = 0
    for match in _END.finditer(text):
        end = match.end()
        if match.group(0)[0] in ".!?":
            following = text[end:].lstrip()[:1]
            if following and (following.islower() or following.isdigit()):
                continue  # an abbreviation or a number, not the sentence's end
        span = _trimmed(text, start, end)
        if span is not None:
            spans.append(span)
        start = end
    span = _trimmed(text, start, len(text))
    if span is not None:
        spans.append(span)
    return spans


def _singles(text: str) -> list[Span]:
    return [s for s in sentences(text) if _WORD.search(text[s.start : s.end])]


def windows(text: str) -> list[Span]:
    """The candidate supporting spans of a source: each sentence with words, then each pair of
    adjacent ones (a claim often draws on two)."""
    single = _singles(text)
    return single + [Span(a.start, b.end) for a, b in itertools.pairwise(single)]


def strip_markers(text: str) -> str:
    return " ".join(_MARKER.sub(" ", text).split())


Vectors = npt.NDArray[np.float32]


def window_vectors(singles: Vectors) -> Vectors:
    """The vectors of `windows()` from those of the sentences alone: a pair's is the normalized
    sum of its two (mean pooling, as the model pools tokens), so each sentence is embedded
    once and the pairs cost nothing."""
    pairs = singles[:-1] + singles[1:]
    norms = np.linalg.norm(pairs, axis=1, keepdims=True)
    return np.vstack([singles, pairs / np.maximum(norms, 1e-12)]).astype(np.float32)


def embed_windows(embedder: Embedder, text: str) -> tuple[list[Span], Vectors]:
    """A text's windows and their vectors (one embedding call, over its sentences)."""
    single = _singles(text)
    if not single:
        return [], np.zeros((0, embedder.dim), dtype=np.float32)
    vectors = embedder.embed_documents([text[s.start : s.end] for s in single])
    return windows(text), window_vectors(np.asarray(vectors, dtype=np.float32))


def best_window(vector: Vectors, spans: Sequence[Span], matrix: Vectors) -> tuple[Span, float]:
    """The window whose vector is closest to `vector` (cosine: both normalized)."""
    scores = matrix @ vector
    best = int(np.argmax(scores))
    return spans[best], float(scores[best])


class CitedSource(Protocol):
    """What citations need of a source (pipelines.chain.Source has it)."""

    @property
    def n(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def chunk_id(self) -> str: ...


@dataclass(slots=True)
class _SourceIndex:
    """The sources' windows and their vectors; each source's best span for the question."""

    spans: dict[int, list[Span]]
    vectors: dict[int, Vectors]
    best: dict[int, Span | None]


def _index(embedder: Embedder, query: str, sources: Sequence[CitedSource]) -> _SourceIndex:
    """Each source's windows and vectors, and its best window for the question. One embedding
    call per source: a concurrent search's query embedding (the same model, one call at a
    time) waits for one source's sentences at most, not for all of them."""
    question = np.asarray(embedder.embed_queries([query])[0], dtype=np.float32)
    spans: dict[int, list[Span]] = {}
    vectors: dict[int, Vectors] = {}
    best: dict[int, Span | None] = {}
    for s in sources:
        spans[s.n], vectors[s.n] = embed_windows(embedder, s.text)
        best[s.n] = best_window(question, spans[s.n], vectors[s.n])[0] if spans[s.n] else None
    return _SourceIndex(spans, vectors, best)


@dataclass(frozen=True, slots=True)
class _Claim:
    n: int
    sentence: Span
    marker: Span


def _claims(text: str, markers: Sequence[Marker]) -> list[_Claim]:
    """Each (sentence, cited source) once, in order. A marker alone in its "sentence" (after
    the full stop: `Venus is hot. [1]`) cites the sentence before it."""
    spans = sentences(text)
    claims: dict[tuple[int, int], _Claim] = {}
    for marker in markers:
        at = next(
            (i for i, s in enumerate(spans) if s.start <= marker.span.start < s.end),
            len(spans) - 1,
        )
        while at > 0 and not _has_words(text, spans[at]):
            at -= 1
        if at < 0 or not _has_words(text, spans[at]):
            continue  # nothing but markers: no claim to check
        claims.setdefault((at, marker.n), _Claim(marker.n, spans[at], marker.span))
    return [claims[key] for key in sorted(claims)]


def _has_words(text: str, span: Span) -> bool:
    return _WORD.search(strip_markers(text[span.start : span.end])) is not None


class AnswerCitations:
    """One answer's citations: `filter` over its chunks; the sources' windows embedded from
    `start()` on (in a worker thread, while the model generates); `best_spans()` and
    `verify()` await that work."""

    def __init__(
        self,
        embedder: Embedder,
        query: str,
        sources: Sequence[CitedSource],
        *,
        support_floor: float,
    ) -> None:
        self._embedder = embedder
        self._query = query
        self._sources = {s.n: s for s in sources}
        self._floor = support_floor
        self.filter = MarkerFilter(self._sources)
        self._indexing: asyncio.Task[_SourceIndex] | None = None
        self._report: CitationReport | None = None

    @classmethod
    def begin(
        cls,
        settings: CitationSettings,
        embedder: Embedder,
        query: str,
        sources: Sequence[CitedSource],
    ) -> AnswerCitations | None:
        """An answer's citation work, its sources' spans embedded from now on (during the
        queue wait and the prefill, off the path to the first token); none when citations are
        off or nothing was retrieved."""
        if not settings.enabled or not sources:
            return None
        citations = cls(embedder, query, sources, support_floor=settings.support_floor)
        citations.start()
        return citations

    def start(self) -> None:
        """Begin embedding the sources' windows (idempotent)."""
        if self._indexing is None:
            sources = list(self._sources.values())
            self._indexing = asyncio.create_task(
                anyio.to_thread.run_sync(_index, self._embedder, self._query, sources),
                name="citation-index",
            )
            # Nobody may await it (an answer abandoned early): its failure is logged, not lost.
            self._indexing.add_done_callback(_log_failure)

    async def _index(self) -> _SourceIndex:
        self.start()
        assert self._indexing is not None
        return await asyncio.shield(self._indexing)

    def shown(self, chunk: GenerationChunk) -> GenerationChunk:
        """The chunk as shown: its text through the marker filter (flushed by the last)."""
        text = self.filter.feed(chunk.text)
        if chunk.finish_reason is not None:
            text += self.filter.flush()
        return chunk if text == chunk.text else dataclasses.replace(chunk, text=text)

    async def best_spans(self) -> dict[int, Span | None]:
        """Each source's best window for the question, by source number (none if the
        embedding failed: an extra of the sources, never worth failing an answer for)."""
        try:
            return dict((await self._index()).best)
        except Exception as exc:
            log.warning("the sources' best spans failed: %r", exc)
            return {}

    @property
    def report(self) -> CitationReport | None:
        """The report once `verify()` has made it."""
        return self._report

    async def verify(self) -> CitationReport:
        """The report over the text emitted so far (the whole answer, once it is consumed);
        made once."""
        if self._report is not None:
            return self._report
        text = self.filter.text
        claims = _claims(text, self.filter.markers)
        citations: list[Citation] = []
        if claims:
            index = await self._index()
            texts = [strip_markers(text[c.sentence.start : c.sentence.end]) for c in claims]
            vectors = await anyio.to_thread.run_sync(self._embedder.embed_queries, texts)
            for claim, vector in zip(claims, vectors, strict=True):
                source = self._sources[claim.n]
                spans = index.spans[claim.n]
                span: Span | None = None
                support = 0.0
                if spans:
                    vec = np.asarray(vector, dtype=np.float32)
                    span, support = best_window(vec, spans, index.vectors[claim.n])
                citations.append(
                    Citation(
                        n=claim.n,
                        chunk_id=source.chunk_id,
                        answer_span=claim.sentence,
                        source_span=span,
                        support=round(support, 4),
                        supported=span is not None and support >= self._floor,
                        marker=claim.marker,
                    )
                )
        self._report = CitationReport(citations, self.filter.invalid)
        return self._report


def _log_failure(task: asyncio.Task[_SourceIndex]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("citation spans failed: %r", task.exception())
