"""HTTP request and response models (the API contract in DESIGN.md), errors included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.types import Filters, Range, Scalar, SearchMode

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from pipelines.chain import Answer, Source, Usage


class ErrorDetail(BaseModel):
    field: str = Field(description="The request field, dotted (e.g. `messages.0.role`)")
    message: str


class ErrorBody(BaseModel):
    """A superset of OpenAI's error object (message, type, param, code): SDKs read it as-is."""

    code: str = Field(description="Machine-readable, e.g. `collection_not_found`")
    message: str = Field(description="What went wrong and what is accepted")
    type: str = Field(description="`invalid_request_error` or `server_error` (OpenAI's)")
    param: str | None = Field(default=None, description="The first field at fault, if any")
    request_id: str = Field(description="Also in the X-Request-ID header and the server log")
    retryable: bool = Field(description="Whether the same request may succeed later")
    details: list[ErrorDetail] | None = Field(
        default=None, description="Every field at fault (validation errors)"
    )


class ErrorEnvelope(BaseModel):
    """The body of every error response, and the data of an SSE `error` event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "collection_not_found",
                        "message": "collection 'nope' does not exist; ingest documents first",
                        "type": "invalid_request_error",
                        "param": None,
                        "request_id": "4f1c2a…",
                        "retryable": False,
                    }
                }
            ]
        }
    )
    error: ErrorBody

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        request_id: str,
        retryable: bool = False,
        *,
        param: str | None = None,
        details: list[ErrorDetail] | None = None,
    ) -> ErrorEnvelope:
        kind = "server_error" if retryable or code == "internal_error" else "invalid_request_error"
        return cls(
            error=ErrorBody(
                code=code,
                message=message,
                type=kind,
                param=param,
                request_id=request_id,
                retryable=retryable,
                details=details,
            )
        )

    def body(self) -> dict[str, Any]:
        """As sent: `details` only on validation errors."""
        data = self.model_dump()
        if self.error.details is None:
            del data["error"]["details"]
        return data


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


def check_max_chars(limit: int, field: str, text: str) -> None:
    """A question longer than the server's limit (RAG_SERVER__MAX_QUESTION_CHARS) is a 422
    naming the field, like any other validation error."""
    if len(text) > limit:
        loc = ("body", *(int(p) if p.isdigit() else p for p in field.split(".")))
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": loc,
                    "msg": f"String should have at most {limit} characters "
                    "(RAG_SERVER__MAX_QUESTION_CHARS)",
                    "input": None,
                }
            ]
        )


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

    query: str = Field(
        min_length=1, description="The search text (at most RAG_SERVER__MAX_QUESTION_CHARS)."
    )
    collection: str | None = Field(default=None, description="Collection (default 'default').")
    k: int | None = Field(default=None, ge=1, le=100, description="How many chunks to return.")
    mode: SearchMode | None = None
    filters: dict[str, FilterValue] | None = Field(
        default=None,
        description="Payload filters, all must hold: a value, a list (any of), or a range.",
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        return not_blank(value)


class SearchHit(BaseModel):
    """A ranked chunk: its score and text, then every payload field it carries."""

    model_config = ConfigDict(extra="allow")
    score: float
    text: str
    doc_id: str
    chunk_id: str
    source: str
    title: str
    chunk_index: int
    page: int | None = None

    @classmethod
    def from_document(cls, doc: Document) -> SearchHit:
        """From the LangChain retriever's Document (metadata: payload, score, chunk id)."""
        fields = {k: v for k, v in doc.metadata.items() if k != "collection"}
        return cls.model_validate({**fields, "text": doc.page_content})


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
        description="The question (or give `messages`); at most RAG_SERVER__MAX_QUESTION_CHARS.",
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Conversation; the last message is the user's question.",
    )
    collection: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    mode: SearchMode | None = None
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
        return self

    def check_question(self, limit: int) -> None:
        if self.messages is not None:
            index = len(self.messages) - 1
            check_max_chars(limit, f"messages.{index}.content", self.messages[-1].content)
        else:
            check_max_chars(limit, "question", self.question or "")


class SourceOut(BaseModel):
    n: int
    doc_id: str
    chunk_id: str
    title: str
    source: str
    page: int | None = None
    score: float
    text: str

    @classmethod
    def of(cls, s: Source) -> SourceOut:
        return cls(
            n=s.n,
            doc_id=s.doc_id,
            chunk_id=s.chunk_id,
            title=s.title,
            source=s.source,
            page=s.page,
            score=s.score,
            text=s.text,
        )

    @staticmethod
    def many(answer: Answer) -> list[SourceOut]:
        return [SourceOut.of(s) for s in answer.sources]


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class AskResponse(BaseModel):
    answer: str
    sources: list[SourceOut]
    finish_reason: str
    usage: UsageOut
    latency_ms: dict[str, float]
    query: str = Field(description="The query used for retrieval (rewritten for follow-ups).")


# -- SSE events of POST /v1/ask/stream (each serialised once, as the event's data) ----------


class SourcesEvent(BaseModel):
    sources: list[SourceOut]


class TokenEvent(BaseModel):
    text: str


class DoneEvent(BaseModel):
    finish_reason: str
    usage: UsageOut
    latency_ms: dict[str, float]


# -- collections and documents -------------------------------------------------------------


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int


class CollectionList(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [{"collections": [{"name": "default", "documents": 3, "chunks": 4}]}]
        }
    }
    collections: list[CollectionOut]


class UploadedFile(BaseModel):
    source: str = Field(description="The file name: the document's source in search hits")
    doc_id: str | None = Field(description="The document's id (null for .jsonl corpora)")
    chunks: int = Field(description="Chunks the collection now holds for this file")


class FailedFile(BaseModel):
    source: str
    reason: str


class UploadResult(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "collection": "default",
                    "files": [
                        {"source": "manual.pdf", "doc_id": "4be3…", "chunks": 42},
                    ],
                    "added": 1,
                    "updated": 0,
                    "unchanged": 0,
                    "chunks": 42,
                    "failed": [{"source": "scan.pdf", "reason": "no text layer"}],
                    "seconds": 3.1,
                }
            ]
        }
    }
    collection: str
    files: list[UploadedFile]
    added: int = Field(description="Documents new to the collection")
    updated: int = Field(description="Documents whose content changed (chunks replaced)")
    unchanged: int = Field(description="Documents already stored with this content")
    chunks: int = Field(description="Chunks embedded and written by this upload")
    failed: list[FailedFile] = Field(description="Files (or corpus lines) skipped, with why")
    seconds: float


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    chunks: int


class DocumentList(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "collection": "default",
                    "total": 1,
                    "documents": [{"doc_id": "4be3…", "source": "manual.pdf", "chunks": 42}],
                }
            ]
        }
    }
    collection: str
    total: int = Field(description="Documents in the collection (before limit/offset)")
    documents: list[DocumentOut]


class DeletedDocument(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [{"collection": "default", "doc_id": "4be3…", "deleted_chunks": 42}]
        }
    }
    collection: str
    doc_id: str
    deleted_chunks: int
