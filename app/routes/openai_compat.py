"""OpenAI-compatible chat completions and models, answered by the RAG chain.

The `model` picks the knowledge base: `rag:<collection>` (or `ragserve` for the default
collection, or a configured alias). The last user message is the question, earlier user and
assistant messages are history, system and developer messages are the application's
instructions (rendered under our grounding rules). Sources come back as `[n]` markers in the
text and in an extra `sources` field, top level and in the choice's `logprobs` (for LangChain).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.deps import ServicesDep
from app.disconnect import answer_text, unless_disconnected
from app.errors import error_responses, request_id
from app.principal import Caller, CallerDep
from app.schemas import ErrorEnvelope, SourceOut, UsageOut, check_max_chars, check_message_chars
from app.schemas.citations import CitationOut
from app.schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Grounding,
    ModelCard,
    ModelList,
)
from app.schemas.usage import CostOut
from app.services import Services
from app.sse import json_event, stream_response
from pipelines.chain import Answer, AskInput
from pipelines.errors import BadRequest, InvalidInput, NotFound
from pipelines.pricing import estimate
from pipelines.settings import LLMSettings
from pipelines.types import ChatMessage

router = APIRouter(tags=["openai"])
# The route's OpenAPI description: what each request field does here.
FIELDS_DOC = "\n".join(
    [
        "The OpenAI request, answered from the model's collection.",
        "",
        "| fields | what happens |",
        "|---|---|",
        "| `model`, `messages`, `stream`, `stream_options.include_usage` | as OpenAI's |",
        "| `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `stop` (a string "
        "or up to 4), `seed`, `presence_penalty`, `frequency_penalty` | **honoured**: passed "
        "to the generator (vLLM's sampling parameters, or the upstream server's request) |",
        "| `system` and `developer` messages | **honoured**: the application's instructions, "
        "added to the prompt after the grounding rules (answer from the sources, cite them); "
        "they shape the answer, they do not lift those rules |",
        '| `tools`, `tool_choice` (other than `"none"`), `functions`, `function_call`, '
        '`response_format` (other than `{"type": "text"}`), `logprobs: true`, '
        "`top_logprobs`, `logit_bias`, `n` > 1 | **refused**: 400 naming the field |",
        "| `tool` messages | ignored (no tools are called) |",
        "| any other field (`user`, `metadata`, `store`, `parallel_tool_calls`, …) | accepted "
        "and ignored |",
        "| `k`, `mode`, `filters`, `collection` (must match the model's), `llm_model` | our "
        "extras (`extra_body` in the SDKs) |",
        "",
        "Beside the text, `sources` (the passages its `[n]` markers cite) come at the top level "
        "of the `chat.completion` (streamed: of the chunk with the finish reason), and again in "
        "that choice's `logprobs` object (its `content` and `refusal` null), which LangChain's "
        "`ChatOpenAI` keeps where it drops unknown fields: "
        '`message.response_metadata["logprobs"]["sources"]`, after `invoke` as after `stream`.',
        "",
        'Errors are OpenAI\'s `{"error": {"message", "type", "param", "code"}}` '
        "(the SDKs raise them as `BadRequestError` etc., `param` naming the field at fault), "
        "with our `request_id`, `retryable` and, on a 422, `details`.",
    ]
)
MODEL_PREFIX = "rag:"
DEFAULT_MODEL = "ragserve"


def _aliases(services: Services) -> dict[str, str]:
    return {
        DEFAULT_MODEL: services.settings.default_collection,
        **services.settings.openai_model_aliases,
    }


async def resolve_collection(
    body: ChatCompletionRequest, services: Services, caller: Caller
) -> str:
    """The model decides the collection: a gateway that allows a client some models allows it
    their collections only. A `collection` field may repeat the model's, not change it."""
    collection = await _model_collection(body.model, services, caller)
    if body.collection is not None and body.collection != collection:
        raise BadRequest(
            f"'collection': '{body.collection}' conflicts with the model '{body.model}', which "
            f"answers from '{collection}'; on this route the model picks the collection "
            f"(use the model '{MODEL_PREFIX}{body.collection}'), or leave 'collection' out",
            param="collection",
        )
    return collection


async def _model_collection(model: str, services: Services, caller: Caller) -> str:
    """The model's collection; 403 when it is not the caller's (before whether it exists, so a
    key learns nothing of other tenants' collections)."""
    aliases = _aliases(services)
    if model in aliases:
        caller.read(aliases[model])
        return aliases[model]
    if model.startswith(MODEL_PREFIX) and len(model) > len(MODEL_PREFIX):
        collection = model[len(MODEL_PREFIX) :]
        caller.read(collection)
        if collection in await services.store.list_collections():
            return collection
    known = ", ".join(await _model_ids(services, caller))
    raise NotFound(f"The model '{model}' does not exist (known: {known})", param="model")


async def _model_ids(services: Services, caller: Caller) -> list[str]:
    """The models this caller may use: aliases of its collections, one per collection."""
    collections = caller.visible(await services.store.list_collections())
    ids = [m for m, c in _aliases(services).items() if c in collections]
    ids += [MODEL_PREFIX + c for c in collections]
    return ids


def _to_ask(
    body: ChatCompletionRequest, services: Services, collection: str, caller: Caller, rid: str
) -> AskInput:
    settings = services.settings
    check_message_chars([m.text() for m in body.messages], settings.server)
    last = len(body.messages) - 1
    check_max_chars(
        settings.server.max_question_chars, f"messages.{last}", body.messages[-1].text()
    )
    # User and assistant turns are the history; system and developer messages become the
    # chain's instructions (after its grounding rules); tool messages are dropped (no tools).
    messages = [
        ChatMessage(role="assistant" if m.role == "assistant" else "user", content=m.text())
        for m in body.messages
        if m.role in ("user", "assistant")
    ]
    if not messages or messages[-1].role != "user":
        raise InvalidInput("the last message must be a non-empty user message", param="messages")
    ask = body.ask_input(
        messages,
        collection=collection,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        model=body.llm_model,
        llm=settings.llm,
        request_id=rid,
        access=caller.read(collection),
    )
    return dataclasses.replace(ask, instructions=body.instructions(), sampling=body.sampling())


@router.get(
    "/models",
    response_model=ModelList,
    summary="OpenAI-compatible list of models (one per collection the key may read)",
)
async def list_models(caller: CallerDep, services: ServicesDep) -> ModelList:
    now = int(time.time())
    ids = await _model_ids(services, caller)
    return ModelList(data=[ModelCard(id=m, created=now) for m in ids])


@router.get(
    "/models/{model}",
    response_model=ModelCard,
    summary="OpenAI-compatible model card (a model of `/v1/models`)",
    responses=error_responses(404, e404="No model of that id among the caller's models"),
)
async def retrieve_model(model: str, caller: CallerDep, services: ServicesDep) -> ModelCard:
    """404 for a model the caller may not use as for one that does not exist: `/v1/models`
    lists neither, and a key learns nothing of other tenants' collections."""
    ids = await _model_ids(services, caller)
    if model not in ids:
        raise NotFound(f"The model '{model}' does not exist (known: {', '.join(ids)})")
    return ModelCard(id=model, created=int(time.time()))


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions, grounded in a collection",
    description=FIELDS_DOC,
    response_model=ChatCompletion,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`chat.completion`, or `chat.completion.chunk` events "
            "ending with `data: [DONE]` when `stream` is true",
        },
        **error_responses(
            400,
            403,
            404,
            422,
            429,
            502,
            503,
            504,
            e400="Bad request: a field asking for what is not supported (`tools`, "
            "`tool_choice`, `functions`, `function_call`, `response_format` other than text, "
            "`logprobs`, `top_logprobs`, `logit_bias`, `n` > 1; the message names it), a "
            "`collection` other than the model's (the model picks the collection), or a body "
            "that cannot be read",
            e404="The model maps to no collection",
        ),
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> ChatCompletion | EventSourceResponse:
    rid = request_id(request)
    body.refuse_unsupported()
    collection = await resolve_collection(body, services, caller)
    chain = services.require_chain()
    ask_input = _to_ask(body, services, collection, caller, rid)
    await caller.before_generation()
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        answer, text = await answer_text(chain, ask_input, request)
        cost = await caller.charge(answer, ask_input.model)
        report = await answer.settle()
        grounded = grounding(answer)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=[
                Choice(
                    message=AssistantMessage(content=text),
                    finish_reason=answer.finish_reason,
                    logprobs=grounded.logprobs(),
                )
            ],
            usage=UsageOut.of(answer.usage),
            cost=CostOut.of(cost),
            **dict(grounded),
            citations=CitationOut.many(answer),
            invalid_citations=report.invalid,
        )
    answer = await unless_disconnected(request, rid, chain.answer(ask_input))
    frames = ChunkFrames(
        completion_id, created, body.model, body.include_usage, services.settings.llm, ask_input
    )
    ping_s = services.settings.server.sse_ping_s
    charge = caller.charger(ask_input.model)
    return stream_response(answer, frames, rid, ping_s=ping_s, finish=charge)


def grounding(answer: Answer) -> Grounding:
    """The answer's extra fields, built once: sent at the top level and in the choice's
    `logprobs` (where LangChain's ChatOpenAI keeps them; see `Grounding`)."""
    return Grounding(sources=SourceOut.many(answer))


class ChunkFrames:
    """`chat.completion.chunk` data events, ending with `data: [DONE]`; an error is the
    error envelope as a data event (what OpenAI's SDKs raise from).

    With `stream_options.include_usage`, every chunk has `"usage": null` but the last, which
    has no choices and the whole answer's usage (OpenAI's rule). The answer's `cost` (our
    extra) is on the last chunk before `[DONE]`: the usage chunk, or without one the chunk
    with the finish reason and `sources`."""

    def __init__(
        self,
        cid: str,
        created: int,
        model: str,
        include_usage: bool,
        llm: LLMSettings,
        ask: AskInput,
    ) -> None:
        self._head: dict[str, Any] = {"id": cid, "created": created, "model": model}
        self._include_usage = include_usage
        self._llm = llm
        self._llm_model = ask.model

    def _chunk(
        self,
        delta: Delta,
        finish: str | None = None,
        grounded: Grounding | None = None,
        **extra: Any,
    ) -> ServerSentEvent:
        logprobs = None
        if grounded is not None:
            logprobs, extra = grounded.logprobs(), {**extra, **dict(grounded)}
        choice = ChunkChoice(delta=delta, finish_reason=finish, logprobs=logprobs)
        chunk = ChatCompletionChunk(**self._head, choices=[choice], **extra)
        return json_event(chunk.wire(null_usage=self._include_usage))

    def start(self, answer: Answer) -> Iterable[ServerSentEvent]:
        yield self._chunk(Delta(role="assistant", content=""))

    def token(self, text: str) -> ServerSentEvent:
        return self._chunk(Delta(content=text))

    def end(self, answer: Answer) -> Iterable[ServerSentEvent]:
        usage = answer.usage
        cost = CostOut.of(
            estimate(self._llm, self._llm_model, usage.prompt_tokens, usage.completion_tokens)
        )
        grounded = grounding(answer)
        cited = {
            "citations": CitationOut.many(answer),
            "invalid_citations": answer.citations.invalid,
        }
        if not self._include_usage:
            yield self._chunk(Delta(), answer.finish_reason, grounded, cost=cost, **cited)
        else:
            yield self._chunk(Delta(), answer.finish_reason, grounded, **cited)
            last = ChatCompletionChunk(
                **self._head, choices=[], usage=UsageOut.of(usage), cost=cost
            )
            yield json_event(last.wire())
        yield ServerSentEvent(data="[DONE]")

    def error(self, error: ErrorEnvelope) -> ServerSentEvent:
        return json_event(error.body())
