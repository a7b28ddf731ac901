"""HTTP request and response models (the API contract in DESIGN.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.types import Filters, Range

Scalar = str | int | float | bool


class RangeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> RangeFilter:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range filter needs at least one of gt, gte, lt, lte")
        return self


FilterValue = Scalar | list[Scalar] | RangeFilter


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def to_domain_filters(filters: dict[str, FilterValue] | None) -> Filters | None:
    if not filters:
        return None
    out: Filters = {}
    for key, value in filters.items():
        if isinstance(value, RangeFilter):
            out[key] = Range(gt=value.gt, gte=value.gte, lt=value.lt, lte=value.lte)
        else:
            out[key] = value
    return out


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "What does the warranty cover?", "k": 5},
                {
                    "query": "install steps",
                    "collection": "manuals",
                    "mode": "hybrid",
                    "filters": {"source": "/docs/install.md", "page": {"gte": 2}},
                },
            ]
        },
    )

    query: str = Field(min_length=1, max_length=4000, description="The search text.")
    collection: str | None = Field(default=None, description="Collection (default 'default').")
    k: int | None = Field(default=None, ge=1, le=100, description="How many chunks to return.")
    mode: Literal["dense", "sparse", "hybrid"] | None = None
    filters: dict[str, FilterValue] | None = Field(
        default=None,
        description="Payload filters, all must hold: a value, a list (any of), or a range.",
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        return not_blank(value)


class SearchHit(BaseModel):
    model_config = ConfigDict(extra="allow")
    score: float
    text: str
    doc_id: str
    chunk_id: str
    source: str
    title: str
    chunk_index: int
    page: int | None = None


class SearchResponse(BaseModel):
    collection: str
    hits: list[SearchHit]
    latency_ms: float


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "details": {"store": "ok", "search": "ready", "generator": "starting"},
                }
            ]
        }
    )
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=16000)


class AskRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"question": "How hot is the surface of Venus?"},
                {
                    "messages": [
                        {"role": "user", "content": "Which planet has the tallest volcano?"},
                        {"role": "assistant", "content": "Mars, with Olympus Mons [1]."},
                        {"role": "user", "content": "How high is it?"},
                    ],
                    "collection": "default",
                    "k": 5,
                    "max_tokens": 200,
                },
            ]
        },
    )

    question: str | None = Field(
        default=None,
        min_length=1,
        max_length=4000,
        description="The question (or give `messages`).",
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Conversation; the last message is the user's question.",
    )
    collection: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    mode: Literal["dense", "sparse", "hybrid"] | None = None
    filters: dict[str, FilterValue] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    model: str | None = Field(default=None, description="Model name or alias (routing).")

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else not_blank(value)

    @model_validator(mode="after")
    def _question_or_messages(self) -> AskRequest:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of 'question' or 'messages'")
        if self.messages is not None:
            last = self.messages[-1]
            if last.role != "user" or not last.content.strip():
                raise ValueError("the last message must be a non-empty user message")
            if len(last.content) > 4000:
                raise ValueError("the last message is longer than 4000 characters")
        return self


class SourceOut(BaseModel):
    n: int
    doc_id: str
    chunk_id: str
    title: str
    source: str
    page: int | None = None
    score: float
    text: str


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AskResponse(BaseModel):
    answer: str
    sources: list[SourceOut]
    finish_reason: str
    usage: UsageOut
    latency_ms: dict[str, float]
    query: str = Field(description="The query used for retrieval (rewritten for follow-ups).")
