"""The wire shapes of an answer's citations: spans, and each `[n]` with its support."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from pipelines.chain import Answer
    from pipelines.citations import Citation, Span


class SpanOut(BaseModel):
    """Characters `start`..`end` (end exclusive) of a text."""

    model_config = ConfigDict(from_attributes=True)
    start: int
    end: int

    @classmethod
    def of(cls, span: Span | None) -> SpanOut | None:
        return None if span is None else cls(start=span.start, end=span.end)


class CitationOut(BaseModel):
    """A `[n]` of the answer: the sentence citing it, the span of the source that supports it
    best and how well (cosine of their embeddings; `supported`: at or above
    RAG_CITATIONS__SUPPORT_FLOOR)."""

    n: int = Field(description="The source's number (`sources[].n`).")
    chunk_id: str = Field(description="The cited source's chunk id (stable across reloads).")
    answer_span: SpanOut = Field(description="The citing sentence: offsets into the answer.")
    marker: SpanOut | None = Field(
        default=None, description="The `[n]` marker (its group) in the answer."
    )
    source_span: SpanOut | None = Field(
        description="The supporting sentence(s): offsets into the source's `text`."
    )
    support: float
    supported: bool

    @classmethod
    def of(cls, citation: Citation) -> CitationOut:
        return cls(
            n=citation.n,
            chunk_id=citation.chunk_id,
            answer_span=SpanOut(start=citation.answer_span.start, end=citation.answer_span.end),
            marker=SpanOut.of(citation.marker),
            source_span=SpanOut.of(citation.source_span),
            support=citation.support,
            supported=citation.supported,
        )

    @staticmethod
    def many(answer: Answer) -> list[CitationOut]:
        """The answer's citations once `answer.settle()` was awaited."""
        return [CitationOut.of(c) for c in answer.citations.citations]
