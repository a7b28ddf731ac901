"""The OpenAI-compatible wire shapes: chat completion requests, responses, stream chunks, models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.schemas.citations import CitationOut
from app.schemas.query import AnswerOptions, SourceOut, UsageOut
from app.schemas.usage import CostOut
from pipelines.errors import BadRequest
from pipelines.types import Sampling

StopWord = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# OpenAI's range for a seed: a signed 64-bit integer.
_SEED_MIN, _SEED_MAX = -(2**63), 2**63 - 1


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class OAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class ChatCompletionRequest(AnswerOptions):
    """OpenAI's request. The sampling fields reach the generator; the fields of features we
    cannot honour (tools, JSON modes, log probabilities, several choices) are declared so that
    `refuse_unsupported` can answer 400 naming them rather than answer as if they were not
    sent; a field OpenAI's API does not have is accepted and ignored (`user`, `metadata`,
    SDK extras), as OpenAI-compatible servers do. Strict like every request model: a JSON value
    of another type is a 422 (`"n": true`, `"stream": "true"`)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "model": "rag:default",
                    "messages": [{"role": "user", "content": "How hot is Venus?"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "k": 5,
                },
            ]
        },
    )

    model: str = Field(description="`rag:<collection>`, `ragserve` (default collection) or alias")
    messages: list[OAIMessage] = Field(min_length=1, max_length=50)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    # Honoured: passed to the generator (vLLM's SamplingParams, or the upstream's body).
    stop: StopWord | Annotated[list[StopWord], Field(max_length=4)] | None = Field(
        default=None, description="Up to 4 sequences where generation stops"
    )
    seed: int | None = Field(
        default=None, ge=_SEED_MIN, le=_SEED_MAX, description="Same seed, same answer"
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Refused with a 400 unless absent or neutral (see `refuse_unsupported`).
    n: int | None = Field(default=None, ge=1, description="Only 1 is supported")
    tools: list[dict[str, Any]] | None = Field(default=None, description="Not supported")
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description='Only "none" is supported'
    )
    functions: list[dict[str, Any]] | None = Field(default=None, description="Not supported")
    function_call: str | dict[str, Any] | None = Field(
        default=None, description='Only "none" is supported'
    )
    response_format: dict[str, Any] | None = Field(
        default=None, description='Only {"type": "text"} is supported'
    )
    logprobs: bool | None = Field(default=None, description="Only false is supported")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="Not supported")
    logit_bias: dict[str, Any] | None = Field(default=None, description="Not supported")
    # RAG extras (extra body fields in the OpenAI SDKs): AnswerOptions', and
    llm_model: str | None = Field(default=None, description="Generator model name or alias")

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[OAIMessage]) -> list[OAIMessage]:
        if messages[-1].role != "user" or not messages[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message")
        return messages

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> Sampling:
        """The honoured sampling fields, as the generator port takes them."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return Sampling(
            stop=tuple(stop),
            seed=self.seed,
            top_p=self.top_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )

    def instructions(self) -> str | None:
        """The system and developer messages' texts, in order (a chat UI's system prompt):
        the chain renders them after its grounding rules. None without any."""
        texts = [m.text().strip() for m in self.messages if m.role in ("system", "developer")]
        joined = "\n\n".join(t for t in texts if t)
        return joined or None

    def refuse_unsupported(self) -> None:
        """A 400 naming the first field asking for what we cannot do: answering as if it had
        not been sent would hand the client prose where it expects a tool call, JSON,
        log probabilities or several choices."""
        problem = _unsupported(self)
        if problem is not None:
            field, why = problem
            raise BadRequest(f"'{field}' is not supported: {why}", param=field)


def _unsupported(body: ChatCompletionRequest) -> tuple[str, str] | None:
    """The first refused field that is set to more than its neutral value, and why."""
    no_tools = (
        "this endpoint answers in text from the knowledge base and calls no tools; leave out "
        "'tools', 'functions' and 'tool_choice' (or send tool_choice \"none\")"
    )
    no_logprobs = "log probabilities are not returned; leave it out (or send logprobs: false)"
    checks: list[tuple[str, bool, str]] = [
        ("tools", bool(body.tools), no_tools),
        ("tool_choice", body.tool_choice not in (None, "none"), no_tools),
        ("functions", bool(body.functions), no_tools),
        ("function_call", body.function_call not in (None, "none"), no_tools),
        (
            "response_format",
            body.response_format not in (None, {"type": "text"}),
            'only {"type": "text"} is supported: answers are prose citing their sources '
            "as [n]; leave 'response_format' out",
        ),
        ("logprobs", bool(body.logprobs), no_logprobs),
        ("top_logprobs", bool(body.top_logprobs), no_logprobs),
        (
            "logit_bias",
            bool(body.logit_bias),
            "token biases are not applied (token ids differ between generator models); "
            "leave it out",
        ),
        (
            "n",
            (body.n or 1) > 1,
            "one choice per request (n=1); send several requests for several answers",
        ),
    ]
    return next(((name, why) for name, refused, why in checks if refused), None)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragserve"


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "ragserve",
                            "object": "model",
                            "created": 1764500000,
                            "owned_by": "ragserve",
                        },
                        {
                            "id": "rag:default",
                            "object": "model",
                            "created": 1764500000,
                            "owned_by": "ragserve",
                        },
                    ],
                }
            ]
        }
    )
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Grounding(BaseModel):
    """What the answer stands on, beside its text. Sent at the top level of a
    `chat.completion` (and of the stream's chunk with the finish reason) for our clients, and
    again in that choice's `logprobs`: LangChain's `ChatOpenAI` drops unknown top-level fields
    but keeps a choice's `logprobs` whole, as `AIMessage.response_metadata["logprobs"]` (invoke
    and stream alike). A field added here rides both ways."""

    sources: list[SourceOut] = Field(description="The passages the answer's `[n]` cite")

    def logprobs(self) -> ChoiceLogprobs:
        return ChoiceLogprobs(**dict(self))


class ChoiceLogprobs(Grounding):
    """A choice's `logprobs`: OpenAI's `content` and `refusal` always null (log probabilities
    are not returned; `logprobs: true` is refused), then the answer's `Grounding` fields."""

    content: None = None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    """`chat.completion`, with the answer's sources and estimated cost in extra fields."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    cost: CostOut
    sources: list[SourceOut]
    citations: list[CitationOut] = Field(default_factory=list)
    invalid_citations: int = 0


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None  # on the chunk with the finish reason
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """`chat.completion.chunk`; the last content chunk carries `sources`, a usage chunk (when
    asked for) has no choices; the last chunk of all carries `cost`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
    sources: list[SourceOut] | None = None
    citations: list[CitationOut] | None = None
    invalid_citations: int | None = None
    cost: CostOut | None = None

    def wire(self, *, null_usage: bool = False) -> dict[str, Any]:
        """As OpenAI sends it: a delta holds only what it carries; `usage`, `sources` and
        `cost` appear only on the chunks that have them, except that with `null_usage`
        (`stream_options.include_usage`) every chunk has `usage`, null until the last."""
        data = self.model_dump(
            exclude={"usage", "sources", "citations", "invalid_citations", "cost"}
        )
        for out, choice in zip(data["choices"], self.choices, strict=True):
            out["delta"] = choice.delta.model_dump(exclude_none=True)
        if self.sources is not None:
            data["sources"] = [s.model_dump() for s in self.sources]
        if self.citations is not None:  # with `sources`: the answer's citations
            data["citations"] = [c.model_dump() for c in self.citations]
            data["invalid_citations"] = self.invalid_citations or 0
        if self.usage is not None or null_usage:
            data["usage"] = None if self.usage is None else self.usage.model_dump()
        if self.cost is not None:
            data["cost"] = self.cost.model_dump()
        return data
