"""One answer from start to finish: prepare, wait for the first token, stream, account usage."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pipelines.chain import AskInput, PreparedAnswer, RagChain
from pipelines.types import GenerationChunk


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(slots=True)
class StartedAnswer:
    """An answer whose first chunk has arrived: errors up to here are plain request errors."""

    prepared: PreparedAnswer
    started_at: float
    ttft_ms: float
    _first: GenerationChunk | None
    _rest: AsyncIterator[GenerationChunk]
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    text: list[str] = field(default_factory=list)

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        """Every chunk once; usage and finish_reason are tallied on the way."""
        pending = [self._first] if self._first is not None else []
        self._first = None
        for chunk in pending:
            self._account(chunk)
            yield chunk
        async for chunk in self._rest:
            self._account(chunk)
            yield chunk

    def _account(self, chunk: GenerationChunk) -> None:
        if chunk.text:
            self.text.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.prompt_tokens is not None:
            self.usage.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens is not None:
            self.usage.completion_tokens = chunk.completion_tokens

    async def aclose(self) -> None:
        """Stop generation upstream (the vLLM request is aborted)."""
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            await closer()

    def latency_ms(self) -> dict[str, float]:
        return {
            "retrieval": self.prepared.retrieval_ms,
            "ttft": round(self.ttft_ms, 2),
            "total": round((time.perf_counter() - self.started_at) * 1000, 2),
            **self.prepared.timings,
        }

    def sources(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.prepared.sources]


async def start_answer(chain: RagChain, ask: AskInput) -> StartedAnswer:
    started = time.perf_counter()
    prepared = await chain.prepare(ask)
    stream = chain.generate(ask, prepared)
    try:
        first: GenerationChunk | None = await anext(stream)
    except StopAsyncIteration:
        first = None
    except BaseException:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
        raise
    ttft = (time.perf_counter() - started) * 1000
    return StartedAnswer(
        prepared=prepared, started_at=started, ttft_ms=ttft, _first=first, _rest=stream
    )


async def collect(answer: StartedAnswer) -> str:
    try:
        async for _ in answer.chunks():
            pass
    finally:
        await answer.aclose()
    return "".join(answer.text)
