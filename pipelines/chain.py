"""The RAG chain: rewrite follow-ups → LangChain retriever → numbered sources → prompt → stream.

Retrieval and prompting are LangChain runnables (the retriever over our store port and a
ChatPromptTemplate); generation streams straight from the Generator port so that no framework
layer sits between vLLM's tokens and the client.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from pipelines import prompts
from pipelines.errors import InvalidInput
from pipelines.ports import Generator
from pipelines.retrieval import RetrievalService, StoreRetriever, document_to_hit
from pipelines.types import (
    ChatMessage,
    Filters,
    GenerationChunk,
    GenerationRequest,
    Hit,
    SearchMode,
    Source,
)

# Tokens kept free for the chat template's special tokens and rounding.
_TEMPLATE_MARGIN = 32
_MAX_HISTORY_MESSAGES = 6


@dataclass(slots=True)
class AskInput:
    messages: list[ChatMessage]
    collection: str
    k: int | None = None
    filters: Filters | None = None
    mode: SearchMode | None = None
    max_tokens: int = 256
    temperature: float = 0.2
    model: str | None = None
    request_id: str = ""

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def history(self) -> list[ChatMessage]:
        return self.messages[:-1]


@dataclass(slots=True)
class PreparedAnswer:
    """Everything decided before generation starts: sources and the prompt."""

    query: str
    sources: list[Source]
    prompt: list[ChatMessage]
    retrieval_ms: float
    timings: dict[str, float] = field(default_factory=dict)


def _overlaps(a: Hit, b: Hit) -> bool:
    if a.doc_id != b.doc_id:
        return False
    a0, a1 = int(a.payload.get("char_start", 0)), int(a.payload.get("char_end", 0))
    b0, b1 = int(b.payload.get("char_start", 0)), int(b.payload.get("char_end", 0))
    shared = min(a1, b1) - max(a0, b0)
    return shared > 0 and shared >= 0.5 * min(a1 - a0, b1 - b0)


def pack_sources(
    hits: Sequence[Hit], budget: int, count_tokens: Callable[[str], int]
) -> list[Source]:
    """Best-first, drop duplicates and chunks overlapping a kept one, stop at the token budget."""
    kept: list[Hit] = []
    texts: set[str] = set()
    used = 0
    for hit in sorted(hits, key=lambda h: h.score, reverse=True):
        norm = " ".join(hit.text.split())
        if not norm or norm in texts or any(_overlaps(hit, k) for k in kept):
            continue
        formatted = prompts.format_source(
            len(kept) + 1,
            str(hit.payload.get("title", "")),
            str(hit.payload.get("source", "")),
            hit.text,
        )
        cost = count_tokens(formatted) + 2
        if used + cost > budget:
            continue  # a shorter chunk further down may still fit
        kept.append(hit)
        texts.add(norm)
        used += cost
    return [Source(n=i + 1, hit=h) for i, h in enumerate(kept)]


def _lc_message(m: ChatMessage) -> BaseMessage:
    if m.role == "assistant":
        return AIMessage(m.content)
    if m.role == "system":
        return SystemMessage(m.content)
    return HumanMessage(m.content)


def _from_lc(m: BaseMessage) -> ChatMessage:
    role = {"ai": "assistant", "system": "system"}.get(m.type, "user")
    return ChatMessage(role=role, content=str(m.content))  # type: ignore[arg-type]


class RagChain:
    def __init__(
        self, retrieval: RetrievalService, generator: Generator, *, rewrite_followups: bool = True
    ) -> None:
        self._retrieval = retrieval
        self._generator = generator
        self._rewrite = rewrite_followups
        self._prompt = ChatPromptTemplate.from_messages(
            [
                ("system", prompts.SYSTEM),
                MessagesPlaceholder("history"),
                ("human", prompts.QUESTION),
            ]
        )

    @property
    def generator(self) -> Generator:
        return self._generator

    async def standalone_query(self, ask: AskInput) -> str:
        """A follow-up ("and the second one?") is rewritten into a self-contained query."""
        if not self._rewrite or not ask.history:
            return ask.question
        history = "\n".join(f"{m.role}: {m.content}" for m in ask.history[-_MAX_HISTORY_MESSAGES:])
        request = GenerationRequest(
            messages=[
                ChatMessage("user", prompts.REWRITE.format(history=history, question=ask.question))
            ],
            max_tokens=64,
            temperature=0.0,
            model=ask.model,
            request_id=f"{ask.request_id}-rewrite" if ask.request_id else "",
        )
        parts = [c.text async for c in self._generator.stream(request)]
        rewritten = " ".join("".join(parts).split()).strip().strip('"')
        return rewritten or ask.question

    async def prepare(self, ask: AskInput) -> PreparedAnswer:
        if not ask.messages or ask.messages[-1].role != "user":
            raise InvalidInput("the last message must be the user's question")
        started = time.perf_counter()
        query = await self.standalone_query(ask)
        rewritten = time.perf_counter()
        retriever = StoreRetriever(service=self._retrieval, collection=ask.collection)
        docs = await retriever.ainvoke(query, k=ask.k, mode=ask.mode, filters=ask.filters)
        retrieval_ms = (time.perf_counter() - rewritten) * 1000

        history = [_lc_message(m) for m in ask.history[-_MAX_HISTORY_MESSAGES:]]
        count = self._generator.count_tokens
        fixed = (
            count(prompts.SYSTEM)
            + count(ask.question)
            + sum(count(str(m.content)) + 4 for m in history)
            + _TEMPLATE_MARGIN
        )
        budget = self._generator.max_model_len - ask.max_tokens - fixed
        if budget <= 0:
            raise InvalidInput(
                f"the question and history take {fixed} tokens and max_tokens={ask.max_tokens}: "
                f"together more than the model's context of {self._generator.max_model_len}"
            )
        sources = pack_sources([document_to_hit(d) for d in docs], budget, count)
        block = "\n\n".join(
            prompts.format_source(
                s.n,
                str(s.hit.payload.get("title", "")),
                str(s.hit.payload.get("source", "")),
                s.hit.text,
            )
            for s in sources
        )
        value = await self._prompt.ainvoke(
            {"sources": block, "history": history, "question": ask.question}
        )
        prompt = [_from_lc(m) for m in value.to_messages()]
        return PreparedAnswer(
            query=query,
            sources=sources,
            prompt=prompt,
            retrieval_ms=round(retrieval_ms, 2),
            timings={"rewrite_ms": round((rewritten - started) * 1000, 2)},
        )

    def generate(self, ask: AskInput, prepared: PreparedAnswer) -> AsyncIterator[GenerationChunk]:
        if not prepared.sources:
            return _no_context()
        return self._generator.stream(
            GenerationRequest(
                messages=prepared.prompt,
                max_tokens=ask.max_tokens,
                temperature=ask.temperature,
                model=ask.model,
                request_id=ask.request_id,
            )
        )


async def _no_context() -> AsyncIterator[GenerationChunk]:
    """Nothing retrieved: say so instead of letting the model answer from thin air."""
    yield GenerationChunk(text=prompts.NO_CONTEXT_ANSWER)
    yield GenerationChunk(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
