"""OpenAI-compatible chat completions and models, answered by the RAG chain.

The `model` picks the knowledge base: `rag:<collection>` (or `ragserve` for the default
collection, or a configured alias). The last user message is the question, earlier messages
are history. Sources come back as `[n]` markers in the text and in an extra `sources` field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.deps import ServicesDep
from app.errors import envelope, request_id
from app.routes.ask import SSE_HEADERS
from app.schemas import FilterValue, to_domain_filters
from app.services import Services
from pipelines.answer import StartedAnswer, collect, start_answer
from pipelines.chain import AskInput
from pipelines.errors import GenerationFailed, InvalidInput, NotFound, RagError
from pipelines.types import ChatMessage

router = APIRouter(tags=["openai"])
MODEL_PREFIX = "rag:"
DEFAULT_MODEL = "ragserve"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class OAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(
        extra="allow",
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
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is supported.")
    # RAG extras (extra body fields in the OpenAI SDKs).
    collection: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    mode: Literal["dense", "sparse", "hybrid"] | None = None
    filters: dict[str, FilterValue] | None = None
    llm_model: str | None = Field(default=None, description="Generator model name or alias")

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[OAIMessage]) -> list[OAIMessage]:
        if messages[-1].role != "user" or not messages[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message")
        if len(messages[-1].text()) > 4000:
            raise ValueError("the last message is longer than 4000 characters")
        return messages


def _aliases(services: Services) -> dict[str, str]:
    return {
        DEFAULT_MODEL: services.settings.default_collection,
        **services.settings.openai_model_aliases,
    }


async def resolve_collection(body: ChatCompletionRequest, services: Services) -> str:
    if body.collection:
        return body.collection
    aliases = _aliases(services)
    if body.model in aliases:
        return aliases[body.model]
    if body.model.startswith(MODEL_PREFIX) and len(body.model) > len(MODEL_PREFIX):
        collection = body.model[len(MODEL_PREFIX) :]
        if collection in await services.store.list_collections():
            return collection
    known = ", ".join(await _model_ids(services))
    raise NotFound(f"The model '{body.model}' does not exist (known: {known})")


async def _model_ids(services: Services) -> list[str]:
    ids = list(_aliases(services))
    ids += [MODEL_PREFIX + c for c in await services.store.list_collections()]
    return ids


def _to_ask(body: ChatCompletionRequest, services: Services, collection: str, rid: str) -> AskInput:
    llm = services.settings.llm
    messages = [
        ChatMessage(
            role="system"
            if m.role in ("system", "developer")
            else ("assistant" if m.role == "assistant" else "user"),
            content=m.text(),
        )
        for m in body.messages
        if m.role != "tool"
    ]
    # System messages from the client are folded into history as context, not instructions.
    messages = [m for m in messages if m.role != "system"] or messages
    if not messages or messages[-1].role != "user":
        raise InvalidInput("the last message must be a non-empty user message")
    return AskInput(
        messages=messages,
        collection=collection,
        k=body.k,
        mode=body.mode,
        filters=to_domain_filters(body.filters),
        max_tokens=body.max_completion_tokens or body.max_tokens or llm.max_tokens,
        temperature=llm.temperature if body.temperature is None else body.temperature,
        model=body.llm_model,
        request_id=rid,
    )


def _usage(answer: StartedAnswer) -> dict[str, int]:
    return answer.usage.to_dict()


_MODELS_EXAMPLE = {
    "object": "list",
    "data": [
        {"id": "ragserve", "object": "model", "created": 1764500000, "owned_by": "ragserve"},
        {"id": "rag:default", "object": "model", "created": 1764500000, "owned_by": "ragserve"},
    ],
}


@router.get(
    "/v1/models",
    summary="OpenAI-compatible list of models (one per collection)",
    responses={200: {"content": {"application/json": {"example": _MODELS_EXAMPLE}}}},
)
async def list_models(services: ServicesDep) -> dict[str, Any]:
    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": now, "owned_by": "ragserve"}
            for m in await _model_ids(services)
        ],
    }


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completions, grounded in a collection",
    responses={
        200: {
            "content": {"text/event-stream": {}, "application/json": {}},
            "description": "`chat.completion`, or `chat.completion.chunk` events "
            "ending with `data: [DONE]` when `stream` is true",
        },
        404: {"description": "The model maps to no collection"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, services: ServicesDep
) -> Any:
    rid = request_id(request)
    collection = await resolve_collection(body, services)
    chain = services.require_chain()
    answer = await start_answer(chain, _to_ask(body, services, collection, rid))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        text = await collect(answer)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": _usage(answer),
            "sources": answer.sources(),
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventSourceResponse(
        _chunks(answer, completion_id, created, body.model, include_usage, rid),
        ping=15,
        headers=SSE_HEADERS,
        send_timeout=30,
    )


async def _chunks(
    answer: StartedAnswer, cid: str, created: int, model: str, include_usage: bool, rid: str
) -> AsyncIterator[ServerSentEvent]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        return ServerSentEvent(data=json.dumps(obj, ensure_ascii=False))

    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for piece in answer.chunks():
                if piece.text:
                    yield chunk({"content": piece.text})
        except RagError as exc:
            yield ServerSentEvent(
                data=json.dumps(envelope(exc.code, exc.message, rid, exc.retryable))
            )
            return
        except Exception as exc:
            err = GenerationFailed(f"generation failed: {type(exc).__name__}")
            yield ServerSentEvent(
                data=json.dumps(envelope(err.code, err.message, rid, err.retryable))
            )
            return
        yield chunk({}, answer.finish_reason, sources=answer.sources())
        if include_usage:
            yield ServerSentEvent(
                data=json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(answer),
                    }
                )
            )
        yield ServerSentEvent(data="[DONE]")
    finally:
        await answer.aclose()
