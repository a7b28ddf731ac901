"""The OpenAI-compatible wire shapes: chat completion requests, responses, stream chunks, models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.query import AnswerOptions, SourceOut, UsageOut
from app.schemas.usage import CostOut


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
    """OpenAI's request; unknown OpenAI fields are accepted and ignored. Strict like every
    request model: a JSON value of another type is a 422 (`"n": true`, `"stream": "true"`)."""

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
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is supported.")
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


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: Any = None
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


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: Any = None
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
    cost: CostOut | None = None

    def wire(self, *, null_usage: bool = False) -> dict[str, Any]:
        """As OpenAI sends it: a delta holds only what it carries; `usage`, `sources` and
        `cost` appear only on the chunks that have them, except that with `null_usage`
        (`stream_options.include_usage`) every chunk has `usage`, null until the last."""
        data = self.model_dump(exclude={"usage", "sources", "cost"})
        for out, choice in zip(data["choices"], self.choices, strict=True):
            out["delta"] = choice.delta.model_dump(exclude_none=True)
        if self.sources is not None:
            data["sources"] = [s.model_dump() for s in self.sources]
        if self.usage is not None or null_usage:
            data["usage"] = None if self.usage is None else self.usage.model_dump()
        if self.cost is not None:
            data["cost"] = self.cost.model_dump()
        return data
