"""A scripted Generator behind the port, for API-shape tests only (vLLM tests use the real one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pipelines.errors import GenerationFailed, GeneratorUnavailable
from pipelines.types import GenerationChunk, GenerationRequest


@dataclass
class ScriptedGenerator:
    tokens: list[str] = field(default_factory=lambda: ["Venus ", "is ", "hot ", "[1]", "."])
    fail_before_first: bool = False
    fail_after: int | None = None
    delay_s: float = 0.0
    rewrite_to: str | None = None
    requests: list[GenerationRequest] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    aborted: list[str] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        return ["scripted"]

    @property
    def max_model_len(self) -> int:
        return 2048

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def ready(self) -> bool:
        return True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        rid = request.request_id or str(len(self.requests))
        if self.fail_before_first:
            raise GeneratorUnavailable("upstream generator is down")
        if self.rewrite_to is not None and "Standalone query" in request.messages[-1].content:
            yield GenerationChunk(
                self.rewrite_to, finish_reason="stop", prompt_tokens=10, completion_tokens=3
            )
            return
        self.active.add(rid)
        finished = False
        try:
            for i, tok in enumerate(self.tokens):
                if self.fail_after is not None and i == self.fail_after:
                    raise GenerationFailed("upstream generator died mid-stream")
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield GenerationChunk(tok)
            finished = True
            yield GenerationChunk(
                "", finish_reason="stop", prompt_tokens=42, completion_tokens=len(self.tokens)
            )
        finally:
            self.active.discard(rid)
            if not finished:
                self.aborted.append(rid)

    async def close(self) -> None:
        return None
