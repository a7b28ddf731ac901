"""Test doubles behind the ports, where the real part is not what a test is about: a scripted
Generator for API-shape tests (vLLM tests use the real one), and an Embedder with the model's
shape and no model for wiring tests in tests/unit."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from pipelines.errors import GenerationFailed, GeneratorUnavailable
from pipelines.types import GenerationChunk, GenerationRequest


@dataclass
class ScriptedGenerator:
    """Streams `tokens` (after `delay_s` each), or fails where told; records every request,
    which are running and which were abandoned before their end. With `forever`, a stream
    never ends (its tokens repeat, each after a turn of the event loop at least) until the
    consumer closes it. `generating` is set once a stream yields tokens, `abandoned` once one
    was closed before its end: threading events, so that a test on another loop or thread than
    the server's can wait for them."""

    tokens: list[str] = field(default_factory=lambda: ["Venus ", "is ", "hot ", "[1]", "."])
    fail_before_first: bool = False
    fail_after: int | None = None
    delay_s: float = 0.0
    rewrite_to: str | None = None
    requests: list[GenerationRequest] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    aborted: list[str] = field(default_factory=list)
    forever: bool = False
    generating: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)

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
        self.generating.set()
        finished = False
        tokens = itertools.cycle(self.tokens) if self.forever else iter(self.tokens)
        try:
            for i, tok in enumerate(tokens):
                if self.fail_after is not None and i == self.fail_after:
                    raise GenerationFailed("upstream generator died mid-stream")
                if self.delay_s or self.forever:
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
                self.abandoned.set()

    async def close(self) -> None:
        return None

    def reset(self) -> None:
        """Back to the default script with nothing recorded (one server serves many tests)."""
        fresh = ScriptedGenerator()
        self.tokens = fresh.tokens
        self.fail_before_first = fresh.fail_before_first
        self.fail_after = fresh.fail_after
        self.delay_s = fresh.delay_s
        self.rewrite_to = fresh.rewrite_to
        self.forever = fresh.forever
        self.generating.clear()
        self.abandoned.clear()
        self.requests.clear()
        self.active.clear()
        self.aborted.clear()


@dataclass(frozen=True)
class ShapeOnlyEmbedder:
    """The bundled model's name and shape, and no model: for tests of what is wired to what,
    which never embed (tests/unit loads no model). Tokens are whitespace-separated words."""

    name: str = "m"
    dim: int = 384
    max_tokens: int = 256

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("a wiring test embedded a document: move it to tests/integration")

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("a wiring test embedded a query: move it to tests/integration")
