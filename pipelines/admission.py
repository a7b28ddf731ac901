"""Admission control for generation: a bounded number run, a bounded queue waits, the rest are
told when to come back.

An engine batches well up to a point (vLLM's `max_num_seqs`); past it every extra request only
makes every stream slower, and an unbounded wait makes every client time out together. So at
most `max_concurrent` generations run, at most `max_queue` wait for a place in arrival order,
and the next gets `Overloaded` (429) with a Retry-After estimated from how fast places free up.
A waiter whose client leaves gives its place in the queue back at once; one that waits past
`queue_timeout_s` gets `QueueTimeout` (503, retryable). `AdmittedGenerator` puts any Generator
behind the gate and gives each generation its deadline (`UpstreamTimeout`, 504).

Every generation passes the gate, so the gate is where it is measured (`Admission.telemetry`,
attachable after construction): the wait for a place, the time from the place to the first
text, the gaps between texts, and how it ended, with the engine's token counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING

from pipelines.errors import Overloaded, QueueTimeout, RagError, UpstreamTimeout
from pipelines.telemetry import NO_TELEMETRY, GenerationOutcome, Telemetry
from pipelines.types import GenerationChunk, GenerationRequest

if TYPE_CHECKING:
    from pipelines.ports import Generator

# How much one finished generation moves the duration estimate (an EWMA: recent load counts).
_EWMA_WEIGHT = 0.2
# Retry-After bounds: an SDK honours up to 60 s (openai-python); a second is the header's unit.
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60


class Admission:
    """At most `max_concurrent` places held at once; up to `max_queue` wait for one, FIFO.

    A place freed goes straight to the oldest waiter (no barging: a newcomer cannot overtake
    the queue). Each held place's duration feeds an EWMA; `capacity / duration` is the rate
    at which the queue drains, which is what a refused client is told to wait for."""

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int,
        queue_timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        if max_concurrent < 1 or max_queue < 0 or queue_timeout_s <= 0:
            raise ValueError("admission needs max_concurrent >= 1, max_queue >= 0, a timeout > 0")
        self._capacity = max_concurrent
        self._max_queue = max_queue
        self._queue_timeout_s = queue_timeout_s
        self._clock = clock
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_s: float | None = None  # EWMA of how long a place is held
        # Who measures the generations through this gate (set by the app once it exists).
        self.telemetry = telemetry

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @property
    def running(self) -> int:
        """Places held now."""
        return self._running

    @property
    def queued(self) -> int:
        """Requests waiting for a place now."""
        return len(self._waiters)

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has drained enough to take one more: everyone
        waiting, and this one, served at `capacity` places per mean duration."""
        mean = self._mean_s if self._mean_s is not None else float(RETRY_AFTER_MIN_S)
        estimate = math.ceil((self.queued + 1) * mean / self._capacity)
        return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, estimate))

    def check(self) -> None:
        """Refuse now, before any work is spent on a request, when it could not even queue."""
        if self._running >= self._capacity and self.queued >= self._max_queue:
            raise self._overloaded()

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold one place for the block (waiting in the queue for it if need be)."""
        await self.acquire()
        started = self._clock()
        try:
            yield
        finally:
            self._record(self._clock() - started)
            self.release()

    async def acquire(self) -> None:
        """Take a place: at once when one is free and nobody waits, else in turn.
        Raises `Overloaded` when the queue is full, `QueueTimeout` after `queue_timeout_s`."""
        if self._running < self._capacity and not self._waiters:
            self._running += 1
            return
        if self.queued >= self._max_queue:
            raise self._overloaded()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await waiter
        except TimeoutError:
            if _handed(waiter):  # the place came just as time ran out: take it
                return
            raise QueueTimeout(
                f"waited RAG_LLM__QUEUE_TIMEOUT_S={self._queue_timeout_s:g} s for a "
                f"generation place (all {self._capacity} taken); retry later",
                self.retry_after_s(),
            ) from None
        except BaseException:  # cancelled: the client left
            if _handed(waiter):
                self.release()  # it was ours already: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Give a place back: to the oldest live waiter, or free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place changes hands; `running` stays
                return
        self._running -= 1

    def _record(self, held_s: float) -> None:
        held_s = max(0.0, held_s)
        if self._mean_s is None:
            self._mean_s = held_s
        else:
            self._mean_s += _EWMA_WEIGHT * (held_s - self._mean_s)

    def _overloaded(self) -> Overloaded:
        wait_s = self.retry_after_s()
        return Overloaded(
            "the service is at capacity: every generation place is taken "
            f"(RAG_LLM__MAX_CONCURRENT={self._capacity}) and the queue is full "
            f"(RAG_LLM__MAX_QUEUE={self._max_queue}); retry in {wait_s} s",
            wait_s,
        )


def _handed(waiter: asyncio.Future[None]) -> bool:
    return waiter.done() and not waiter.cancelled()


class AdmittedGenerator:
    """A Generator behind an `Admission`: each stream holds a place from its first step until
    it ends, fails, is closed or cancelled, and ends with `UpstreamTimeout` past `timeout_s`
    (the inner stream closed, so the engine's request is aborted). Everything else is the
    inner generator's."""

    def __init__(self, inner: Generator, admission: Admission, *, timeout_s: float) -> None:
        self._inner = inner
        self._admission = admission
        self._timeout_s = timeout_s

    @property
    def inner(self) -> Generator:
        return self._inner

    @property
    def admission(self) -> Admission:
        return self._admission

    @property
    def model_names(self) -> list[str]:
        return self._inner.model_names

    @property
    def max_model_len(self) -> int:
        return self._inner.max_model_len

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def close(self) -> None:
        await self._inner.close()

    def model_label(self, request: GenerationRequest) -> str:
        """The model a generation is counted under: one the generator serves (a client's
        unknown name must not become a label of its own)."""
        names = self._inner.model_names
        if request.model is not None and request.model in names:
            return request.model
        return names[0] if names else "unknown"

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        telemetry = self._admission.telemetry
        model = self.model_label(request)
        asked = time.perf_counter()
        started: float | None = None
        last_text: float | None = None
        finish: GenerationChunk | None = None
        # Anything else that ends it is a failure nobody classified (a bug, not an error code).
        outcome: GenerationOutcome = "failed"
        reason = "internal_error"
        try:
            async with self._admission.place():
                started = time.perf_counter()
                telemetry.generation_queued(model, started - asked)
                # Closed with this stream, at once: the inner one aborts the engine's request.
                async with contextlib.aclosing(self._steps(request)) as steps:
                    async for chunk in steps:
                        if chunk.text:
                            now = time.perf_counter()
                            if last_text is None:
                                telemetry.generation_first_token(model, now - started)
                            else:
                                telemetry.generation_token_gap(model, now - last_text)
                            last_text = now
                        if chunk.finish_reason is not None:
                            finish = chunk
                        yield chunk
            outcome, reason = "stop", ""  # ended without a finish chunk: nothing cut it short
        except (GeneratorExit, asyncio.CancelledError):
            outcome, reason = "aborted", "client_gone"
            raise
        except UpstreamTimeout as exc:
            outcome, reason = "timeout", exc.code
            raise
        except RagError as exc:
            outcome, reason = "failed", exc.code
            raise
        finally:
            if finish is not None and finish.finish_reason is not None:
                # The engine said how it ended; a consumer closing after that aborted nothing.
                outcome, reason = finish.finish_reason, ""
            telemetry.generation_ended(
                model,
                outcome,
                prompt_tokens=(finish.prompt_tokens or 0) if finish is not None else 0,
                completion_tokens=(finish.completion_tokens or 0) if finish is not None else 0,
                seconds=time.perf_counter() - started if started is not None else 0.0,
                reason=reason,
            )

    async def _steps(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """The inner stream under the deadline (the caller holds the place)."""
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        inner = aiter(self._inner.stream(request))
        try:
            while True:
                # The deadline around each step only, never around a yield: the consumer's
                # own work between chunks must not be cancelled by it.
                async with asyncio.timeout_at(deadline) as step:
                    try:
                        chunk = await anext(inner)
                    except StopAsyncIteration:
                        return
                yield chunk
        except TimeoutError:
            if not step.expired():
                raise
            raise UpstreamTimeout(
                f"generation took longer than RAG_LLM__TIMEOUT_S={self._timeout_s:g} s"
            ) from None
        finally:
            closer = getattr(inner, "aclose", None)
            if closer is not None:
                await closer()
