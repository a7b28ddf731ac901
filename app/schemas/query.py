"""Search and answer wire models: requests, hits, sources, usage, the SSE event bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.schemas.citations import CitationOut, SpanOut
from app.schemas.usage import CostOut
from pipelines.access import Access
from pipelines.chain import AskInput
from pipelines.settings import LLMSettings, ServerSettings
from pipelines.stores.terms import (
    FILTER_KEY_PATTERN,
    INT64,
    MAX_FILTER_KEY,
    MAX_FILTER_LIST,
    MAX_FILTER_STRING,
    MAX_FILTERS,
    filter_key_problem,
    filter_value_problem,
)
from pipelines.types import ChatMessage, Filters, Range, Scalar, SearchMode, public_payload

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from pipelines.chain import Answer, Source, Usage
    from pipelines.citations import Span


class RangeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> RangeFilter:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range filter needs at least one of gt, gte, lt, lte")
        return self


# Filters: the rule is the store's (pipelines/stores/terms.py), checked here so a bad field is
# a 422 naming it (`filters.<key>`) with one message saying what is accepted, not one line per
# union branch. The JSON schema says the same for clients and fuzzers.
_FilterString = Annotated[str, Field(max_length=MAX_FILTER_STRING)]
_FilterInt = Annotated[int, Field(ge=INT64[0], le=INT64[1])]
_FilterList = Field(min_length=1, max_length=MAX_FILTER_LIST)
FilterInput = (
    _FilterString
    | _FilterInt
    | float
    | bool
    | Annotated[list[_FilterString], _FilterList]
    | Annotated[list[_FilterInt], _FilterList]
    | RangeFilter
)


def _filter_key(key: str) -> str:
    problem = filter_key_problem(key)
    if problem:
        raise PydanticCustomError("filter_key", "{rule}", {"rule": problem})
    return key


def _filter_value(value: Any) -> Scalar | list[Scalar] | Range:
    term = value
    if isinstance(value, dict):
        try:
            r = RangeFilter.model_validate(value)
        except ValidationError:
            term = None  # answered with the whole rule below
        else:
            term = Range(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
    problem = filter_value_problem(term)
    if problem:
        raise PydanticCustomError("filter_value", "{rule}", {"rule": problem})
    return term  # type: ignore[no-any-return]


FilterKey = Annotated[
    str,
    AfterValidator(_filter_key),
    WithJsonSchema({"type": "string", "pattern": FILTER_KEY_PATTERN, "maxLength": MAX_FILTER_KEY}),
]
FilterValue = Annotated[
    Scalar | list[Scalar] | Range, PlainValidator(_filter_value, json_schema_input_type=FilterInput)
]
FilterMap = Annotated[dict[FilterKey, FilterValue], Field(max_length=MAX_FILTERS)]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def check_max_chars(
    limit: int,
    field: str,
    text: str,
    *,
    setting: str = "RAG_SERVER__MAX_QUESTION_CHARS",
    what: str = "String",
) -> None:
    """A text longer than the server's limit (the `setting` that sets it) is a 422 naming the
    field, like any other validation error."""
    if len(text) > limit:
        loc = ("body", *(int(p) if p.isdigit() else p for p in field.split(".")))
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": loc,
                    "msg": f"{what} should have at most {limit} characters ({setting})",
                    "input": None,
                }
            ]
        )


def check_message_chars(contents: list[str], server: ServerSettings) -> None:
    """Each message's text within RAG_SERVER__MAX_MESSAGE_CHARS and all of them within
    RAG_SERVER__MAX_TOTAL_CHARS: checked before anything is tokenized."""
    for i, text in enumerate(contents):
        check_max_chars(
            server.max_message_chars,
            f"messages.{i}.content",
            text,
            setting="RAG_SERVER__MAX_MESSAGE_CHARS",
        )
    check_max_chars(
        server.max_total_chars,
        "messages",
        "".join(contents),
        setting="RAG_SERVER__MAX_TOTAL_CHARS",
        what="The messages together",
    )


def to_domain_filters(filters: Filters | None) -> Filters | None:
    """The request's filters (already the store's terms, checked by FilterValue)."""
    return dict(filters) if filters else None


SCORE_DESCRIPTION = (
    "The chunk's probability of relevance to the query, in [0, 1]: a logistic function of its "
    "absolute dense cosine and BM25 scores (the reranker's score when one is set), calibrated "
    "per search mode on a train split; comparable across queries. Hits are in ranking order."
)


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # a JSON value of another type is a 422, not coerced (`k: "5"`, `k: true`)
        json_schema_extra={
            "examples": [
                {"query": "What does the warranty cover?", "k": 5},
                {
                    "query": "install steps",
                    "collection": "manuals",
                    "mode": "hybrid",
                    "filters": {"source": "guides/install.md", "page": {"gte": 2}},
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
    filters: FilterMap | None = Field(
        default=None,
        description="Payload filters, all must hold: a value, a list (any of), or a range.",
    )
    min_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "The least probability of relevance a hit must have to be returned (its `score`). "
            "Unset: the service's relevance floor (RAG_RETRIEVAL__RELEVANCE_FLOOR), the one "
            "answers use, so hits clearly off the query's topic are not returned and a query "
            "the collection has nothing on gets no hits. Lower it to see weaker matches; 0 "
            "returns the best k whatever their score."
        ),
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        return not_blank(value)


class SearchHit(BaseModel):
    """A ranked chunk: its score and text, then every payload field it carries."""

    model_config = ConfigDict(extra="allow")
    score: float = Field(description=SCORE_DESCRIPTION)
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
        fields = {k: v for k, v in public_payload(doc.metadata).items() if k != "collection"}
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
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str = Field(description="At most RAG_SERVER__MAX_MESSAGE_CHARS characters.")


class AnswerOptions(BaseModel):
    """What both answer routes (ours and the OpenAI one) take beside the messages. Every
    request model is strict: a JSON value must have the field's type (an integer is a number;
    `"5"` or `true` is no integer), inherited by AskRequest and ChatCompletionRequest."""

    model_config = ConfigDict(strict=True)

    collection: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    mode: SearchMode | None = None
    filters: FilterMap | None = None
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
        access: Access,
    ) -> AskInput:
        """The chain's input; unset sampling options take the settings' defaults. `access`:
        what the asker may read."""
        return AskInput(
            messages=messages,
            collection=collection,
            access=access,
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
    chunk_id: str = Field(description="Stable: uuid5 of the document id and chunk index.")
    title: str
    source: str
    page: int | None = None
    score: float = Field(description=SCORE_DESCRIPTION)
    text: str
    best_span: SpanOut | None = Field(
        default=None,
        description="The sentence (or two) of `text` closest to the question: offsets into "
        "`text`; null with RAG_CITATIONS__ENABLED=false.",
    )

    @classmethod
    def of(cls, source: Source, best_span: Span | None = None) -> SourceOut:
        out = cls.model_validate(source)
        out.best_span = SpanOut.of(best_span)
        return out

    @staticmethod
    def many(answer: Answer) -> list[SourceOut]:
        """The answer's sources, with their best spans once `answer.best_spans()` was awaited."""
        return [SourceOut.of(s, answer.best_span(s.n)) for s in answer.sources]


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
    cost: CostOut
    latency_ms: dict[str, float]
    query: str = Field(description="The query used for retrieval (rewritten for follow-ups).")
    citations: list[CitationOut] = Field(default_factory=list)
    invalid_citations: int = Field(
        default=0, description="`[n]` markers naming no source given: removed from the answer."
    )


# -- SSE events of POST /v1/ask/stream (each serialised once, as the event's data) ----------


class SourcesEvent(BaseModel):
    sources: list[SourceOut]


class TokenEvent(BaseModel):
    text: str


class DoneEvent(BaseModel):
    finish_reason: str
    usage: UsageOut
    cost: CostOut
    latency_ms: dict[str, float]
    best_spans: list[SpanOut | None] = Field(
        default_factory=list,
        description="Each source's `best_span`, in the order of the `sources` event (whose "
        "`best_span` is null: it is computed while the answer streams).",
    )
    citations: list[CitationOut] = Field(default_factory=list)
    invalid_citations: int = Field(
        default=0, description="`[n]` markers naming no source given: removed from the tokens."
    )
