"""The RAG chain: one answer from question to usage (rewrite, retrieve, pack, prompt, stream).

Retrieval and prompting are LangChain runnables (the retriever over our store port and a
ChatPromptTemplate); generation streams straight from the Generator port so that no framework
layer sits between vLLM's tokens and the client. `RagChain.answer` returns once the first
token is there: every error up to that point is a plain request error, after it the caller
reports failures in-band.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from pipelines import prompts
from pipelines.access import Access
from pipelines.admission import Admission
from pipelines.citations import NO_CITATIONS, AnswerCitations, CitationReport, Span
from pipelines.errors import InvalidInput
from pipelines.ports import Generator
from pipelines.retrieval import RetrievalService, StoreRetriever
from pipelines.settings import CitationSettings
from pipelines.types import (
    ChatMessage,
    Filters,
    GenerationChunk,
    GenerationRequest,
    Sampling,
    SearchMode,
)

# Tokens kept free for the chat template's special tokens and rounding.
_TEMPLATE_MARGIN = 32
_MAX_HISTORY_MESSAGES = 6
# LangChain's message types as our roles (the rendered prompt is handed to the Generator port).
_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "ai": "assistant",
    "system": "system",
    "human": "user",
}


@dataclass(slots=True)
class AskInput:
    messages: list[ChatMessage]
    collection: str
    access: Access  # what the asker may read: the retriever selects nothing else
    k: int | None = None
    filters: Filters | None = None
    mode: SearchMode | None = None
    max_tokens: int = 256
    temperature: float = 0.2
    model: str | None = None
    request_id: str = ""
    # The client's system/developer messages, joined: rendered after our grounding rules.
    instructions: str | None = None
    # The client's sampling options: for the answer's generation, not the rewrite's.
    sampling: Sampling = field(default_factory=Sampling)

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def history(self) -> list[ChatMessage]:
        return self.messages[:-1]


@dataclass(frozen=True, slots=True)
class Source:
    """A retrieved chunk as cited in an answer: `[n]` in the text refers to `n`. It reads the
    retriever's Document as it came (page_content is the chunk text; metadata its payload,
    score and chunk id)."""

    n: int
    document: Document
    # The source as the prompt shows it (formatted once, when its tokens were counted).
    prompt_text: str

    def _meta(self, key: str, default: Any = "") -> Any:
        return self.document.metadata.get(key, default)

    @property
    def text(self) -> str:
        return self.document.page_content

    @property
    def doc_id(self) -> str:
        return str(self._meta("doc_id"))

    @property
    def chunk_id(self) -> str:
        return str(self._meta("chunk_id", self.document.id or ""))

    @property
    def title(self) -> str:
        return str(self._meta("title"))

    @property
    def source(self) -> str:
        return str(self._meta("source"))

    @property
    def page(self) -> int | None:
        page = self._meta("page", None)
        return None if page is None else int(page)

    @property
    def score(self) -> float:
        return float(self._meta("score", 0.0))

    @property
    def span(self) -> tuple[int, int]:
        return int(self._meta("char_start", 0)), int(self._meta("char_end", 0))


def _overlaps(a: Source, doc_id: str, span: tuple[int, int]) -> bool:
    if a.doc_id != doc_id:
        return False
    (a0, a1), (b0, b1) = a.span, span
    shared = min(a1, b1) - max(a0, b0)
    return shared > 0 and shared >= 0.5 * min(a1 - a0, b1 - b0)


def pack_sources(
    docs: Sequence[Document],
    budget: int,
    count_tokens: Callable[[str], int],
    format_source: Callable[[int, str, str, str], str] = prompts.format_source,
) -> list[Source]:
    """Best-first, drop duplicates and chunks overlapping a kept one, stop at the token budget
    (each source counted as `format_source` shows it to the model)."""
    kept: list[Source] = []
    texts: set[str] = set()
    used = 0
    for doc in sorted(docs, key=lambda d: float(d.metadata.get("score", 0.0)), reverse=True):
        norm = " ".join(doc.page_content.split())
        meta = doc.metadata
        span = int(meta.get("char_start", 0)), int(meta.get("char_end", 0))
        if (
            not norm
            or norm in texts
            or any(_overlaps(k, str(meta.get("doc_id", "")), span) for k in kept)
        ):
            continue
        n = len(kept) + 1
        formatted = format_source(
            n, str(meta.get("title", "")), str(meta.get("source", "")), doc.page_content
        )
        cost = count_tokens(formatted) + 2
        if used + cost > budget:
            continue  # a shorter chunk further down may still fit
        kept.append(Source(n=n, document=doc, prompt_text=formatted))
        texts.add(norm)
        used += cost
    return kept


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Prompt:
    """What is decided before generation: the query, the sources and the rendered messages."""

    query: str
    sources: list[Source]
    messages: list[ChatMessage]
    started_at: float
    rewrite_ms: float
    retrieval_ms: float


@dataclass(slots=True)
class Answer:
    """An answer whose first chunk has arrived: its sources, then its chunks once each, with
    usage and finish_reason tallied on the way. `aclose()` stops generation upstream. With
    citations on, the chunks are the text as shown (`[n]` naming no source removed); once
    they are consumed, `settle()` (pipelines/citations.py)."""

    prompt: Prompt
    ttft_ms: float
    _first: GenerationChunk | None
    _rest: AsyncIterator[GenerationChunk]
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    text: list[str] = field(default_factory=list)
    _citations: AnswerCitations | None = None
    _best: dict[int, Span | None] = field(default_factory=dict)

    @property
    def query(self) -> str:
        return self.prompt.query

    @property
    def sources(self) -> list[Source]:
        return self.prompt.sources

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        pending = [self._first] if self._first is not None else []
        self._first = None
        for chunk in pending:
            yield self._account(chunk)
        async for chunk in self._rest:
            yield self._account(chunk)
        if self._citations is not None:
            rest = self._citations.filter.flush()  # a stream that ended without a last chunk
            if rest:
                self.text.append(rest)
                yield GenerationChunk(text=rest)

    async def collect(self) -> str:
        """The whole answer text (for non-streaming callers); generation is closed after."""
        try:
            async for _ in self.chunks():
                pass
        finally:
            await self.aclose()
        return "".join(self.text)

    def _account(self, chunk: GenerationChunk) -> GenerationChunk:
        """Tally the chunk; its text as shown (markers filtered)."""
        if self._citations is not None:
            chunk = self._citations.shown(chunk)
        if chunk.text:
            self.text.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.prompt_tokens is not None:
            self.usage.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens is not None:
            self.usage.completion_tokens = chunk.completion_tokens
        return chunk

    async def best_spans(self) -> dict[int, Span | None]:
        """Each source's best span for the question, by number (embedded since the prompt)."""
        if self._citations is not None and not self._best:
            self._best = await self._citations.best_spans()
        return self._best

    def best_span(self, n: int) -> Span | None:
        """Source n's best span once `best_spans()` was awaited."""
        return self._best.get(n)

    async def settle(self) -> CitationReport:
        """Once the chunks are consumed: the sources' best spans, and the citations (each
        with its source's best supporting span; invalid markers removed), made once; empty
        when off or nothing was found."""
        await self.best_spans()
        return NO_CITATIONS if self._citations is None else await self._citations.verify()

    @property
    def citations(self) -> CitationReport:
        """The report `settle()` made (empty before)."""
        report = self._citations.report if self._citations is not None else None
        return report if report is not None else NO_CITATIONS

    async def aclose(self) -> None:
        """Stop generation upstream (the vLLM request is aborted)."""
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            await closer()

    def latency_ms(self) -> dict[str, float]:
        return {
            "retrieval": self.prompt.retrieval_ms,
            "ttft": round(self.ttft_ms, 2),
            "total": round((time.perf_counter() - self.prompt.started_at) * 1000, 2),
            "rewrite_ms": self.prompt.rewrite_ms,
        }


class RagChain:
    def __init__(
        self,
        retrieval: RetrievalService,
        generator: Generator,
        *,
        rewrite_followups: bool = True,
        admission: Admission | None = None,
        citations: CitationSettings | None = None,
    ) -> None:
        self._retrieval = retrieval
        self._citations = citations or CitationSettings()
        self._generator = generator
        self._rewrite = rewrite_followups
        # The gate `generator` stands behind, if any: checked before retrieval, so that an
        # overloaded service refuses a request before paying for its search.
        self._admission = admission
        # The answer prompt's variant (RAG_CITATIONS__PROMPT; an unknown name fails here).
        self._variant = prompts.prompt_variant(self._citations.prompt)
        system, *examples = self._variant.template_messages()
        self._prompt = ChatPromptTemplate.from_messages(
            [
                # The instructions are a variable, not template text: braces in them stay text.
                (system[0], system[1] + "{instructions}"),
                *examples,
                MessagesPlaceholder("history"),
                ("human", self._variant.question),
            ]
        )

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

    def _budget(self, ask: AskInput, history: Sequence[ChatMessage]) -> int:
        """Prompt tokens left for the sources once the rest of the prompt and the answer fit."""
        count = self._generator.count_tokens
        fixed = (
            count(self._variant.fixed_text())
            + count(prompts.format_instructions(ask.instructions))
            + count(ask.question)
            + sum(count(m.content) + 4 for m in history)
            + _TEMPLATE_MARGIN
        )
        budget = self._generator.max_model_len - ask.max_tokens - fixed
        if budget <= 0:
            raise InvalidInput(
                f"the question and history take {fixed} tokens and max_tokens={ask.max_tokens}: "
                f"together more than the model's context of {self._generator.max_model_len}"
            )
        return budget

    def _render(
        self, sources: Sequence[Source], history: Sequence[ChatMessage], ask: AskInput
    ) -> list[ChatMessage]:
        """The prompt, rendered once, as the Generator port's messages."""
        messages: list[BaseMessage] = self._prompt.format_messages(
            sources="\n\n".join(s.prompt_text for s in sources),
            instructions=prompts.format_instructions(ask.instructions),
            history=[(m.role, m.content) for m in history],
            question=ask.question,
        )
        return [ChatMessage(_ROLES.get(m.type, "user"), str(m.content)) for m in messages]

    def _pack(
        self, ask: AskInput, docs: Sequence[Document]
    ) -> tuple[list[Source], list[ChatMessage]]:
        """The sources within the token budget and the prompt over them (none: no prompt)."""
        history = ask.history[-_MAX_HISTORY_MESSAGES:]
        sources = pack_sources(
            docs,
            self._budget(ask, history),
            self._generator.count_tokens,
            self._variant.format_source,
        )
        return sources, self._render(sources, history, ask) if sources else []

    async def prompt(self, ask: AskInput) -> Prompt:
        """Rewrite a follow-up, retrieve, pack the sources and render the prompt."""
        if not ask.messages or ask.messages[-1].role != "user":
            raise InvalidInput("the last message must be the user's question")
        started = time.perf_counter()
        query = await self.standalone_query(ask)
        rewritten = time.perf_counter()
        retriever = StoreRetriever(
            service=self._retrieval, collection=ask.collection, access=ask.access
        )
        docs = await retriever.ainvoke(query, k=ask.k, mode=ask.mode, filters=ask.filters)
        retrieved = time.perf_counter()
        # Counting tokens (a real tokenizer, over a history of up to tens of thousands of
        # characters) and rendering are CPU work: one thread hop keeps the loop serving.
        sources, messages = await anyio.to_thread.run_sync(self._pack, ask, docs)
        return Prompt(
            query=query,
            sources=sources,
            messages=messages,
            started_at=started,
            rewrite_ms=round((rewritten - started) * 1000, 2),
            retrieval_ms=round((retrieved - rewritten) * 1000, 2),
        )

    async def answer(self, ask: AskInput) -> Answer:
        """The prompt, then generation up to its first token (nothing retrieved: the
        knowledge base's "no information" answer, without calling the model)."""
        if self._admission is not None:
            self._admission.check()
        prompt = await self.prompt(ask)
        citations = AnswerCitations.begin(
            self._citations, self._retrieval.embedder, prompt.query, prompt.sources
        )
        if prompt.sources:
            stream = self._generator.stream(
                GenerationRequest(
                    messages=prompt.messages,
                    max_tokens=ask.max_tokens,
                    temperature=ask.temperature,
                    model=ask.model,
                    request_id=ask.request_id,
                    sampling=ask.sampling,
                )
            )
        else:
            stream = _no_context()
        try:
            first: GenerationChunk | None = await anext(stream)
        except StopAsyncIteration:
            first = None
        except BaseException:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        return Answer(
            prompt=prompt,
            ttft_ms=(time.perf_counter() - prompt.started_at) * 1000,
            _first=first,
            _rest=stream,
            _citations=citations,
        )


async def _no_context() -> AsyncIterator[GenerationChunk]:
    """Nothing retrieved: say so instead of letting the model answer from thin air."""
    yield GenerationChunk(text=prompts.NO_CONTEXT_ANSWER)
    yield GenerationChunk(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
