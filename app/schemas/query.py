"""Search and answer wire models: requests, hits, sources, usage, the SSE event bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.chain import AskInput
from pipelines.settings import LLMSettings
from pipelines.types import ChatMessage, Filters, Range, Scalar, SearchMode

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from pipelines.chain import Answer, Source, Usage


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


class AnswerOptions(BaseModel):
    """What both answer routes (ours and the OpenAI one) take beside the messages."""

    collection: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    mode: SearchMode | None = None
    filters: dict[str, FilterValue] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)

    def ask_input(
        self,
        messages: list[ChatMessage],
        *,
        collection: str,
        max_tokens: int | None,
        model: str | None,
        llm: LLMSettings,
        request_id: str,
    ) -> AskInput:
        """The chain's input; unset sampling options take the settings' defaults."""
        return AskInput(
            messages=messages,
            collection=collection,
            k=self.k,
            filters=to_domain_filters(self.filters),
            mode=self.mode,
            max_tokens=max_tokens or llm.max_tokens,
            temperature=llm.temperature if self.temperature is None else self.temperature,
            model=model,
            request_id=request_id,
        )


class AskRequest(AnswerOptions):
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
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
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
    """A cited source, read off the chain's Source (its properties)."""

    model_config = ConfigDict(from_attributes=True)
    n: int
    doc_id: str
    chunk_id: str
    title: str
    source: str
    page: int | None = None
    score: float
    text: str

    @classmethod
    def of(cls, source: Source) -> SourceOut:
        return cls.model_validate(source)

    @staticmethod
    def many(answer: Answer) -> list[SourceOut]:
        return [SourceOut.model_validate(s) for s in answer.sources]


class UsageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls.model_validate(usage)


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
