"""Adaptive micro-batching: concurrent callers of one sync, CPU-bound model call share it.

BentoML's adaptive batching, in-process: a lone caller runs at once; callers that arrive
while a call runs wait together and go in the next call, up to `max_batch` of them;
`max_wait_ms` > 0 also holds a call that long for company. One model call costs about the
same for 1 query as for 32 on a CPU (the fixed cost is the run, not the row), so under load
the calls, and the queueing behind the limiter, shrink by the batch size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

import anyio

from pipelines.errors import ConfigError, RagError
from pipelines.telemetry import NO_TELEMETRY, BatchKind, Telemetry

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class BatchStats:
    """What a batcher has done so far (tests and metrics read batch sizes here)."""

    calls: int = 0
    items: int = 0
    last_batch: int = 0
    max_batch: int = 0

    def record(self, size: int) -> None:
        self.calls += 1
        self.items += size
        self.last_batch = size
        self.max_batch = max(self.max_batch, size)


class _Lane(Generic[T, R]):
    """One event loop's queue and the task draining it: futures and tasks belong to a loop,
    so a batcher used from several loops (tests) keeps their callers apart."""

    def __init__(self) -> None:
        self.queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def live(self) -> int:
        """Waiting callers, after dropping those cancelled while queued."""
        self.queue = deque(entry for entry in self.queue if not entry[1].done())
        return len(self.queue)


class MicroBatcher(Generic[T, R]):
    """`await submit(item)` → `fn([..., item, ...])[i]`, `fn` run in a worker thread.

    No persistent task: the first caller onto an idle loop starts a drain task that runs
    batches while callers are queued and ends when none are (nothing to close, nothing left
    running after the last result). A caller cancelled while queued is dropped from its
    batch; one cancelled during the call has its result ignored; the call itself is never
    abandoned. An exception from `fn` reaches every caller of that batch, and only them.
    `max_batch=1` is batching off: each caller makes its own call, as without a batcher.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        limiter: anyio.CapacityLimiter | None = None,
        name: str = "batch",
        kind: BatchKind | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ConfigError(f"{name}: max_batch={max_batch} must be ≥ 1, max_wait_ms ≥ 0")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        # Shared with the caller's other model calls: one at a time, each uses every core.
        self._limiter = limiter or anyio.CapacityLimiter(1)
        self._name = name
        self._lanes: WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane[T, R]] = WeakKeyDictionary()
        self.stats = BatchStats()
        # What each model call is reported as (None: not reported), and to whom.
        self.kind: BatchKind | None = kind
        self.telemetry = telemetry

    async def submit(self, item: T) -> R:
        if self.max_batch == 1:
            return (await self._call([item]))[0]
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        future: asyncio.Future[R] = loop.create_future()
        lane.queue.append((item, future))
        lane.arrived.set()
        if lane.task is None:
            # Started after the callers already scheduled in this turn of the loop have
            # queued: a burst (a gather, a wave of requests) goes in one call.
            lane.task = loop.create_task(self._drain(lane), name=f"{self._name}-batches")
        return await future  # cancelled here: the future is too, and is skipped

    async def _drain(self, lane: _Lane[T, R]) -> None:
        try:
            while batch := await self._next_batch(lane):
                await self._run(batch)
        finally:
            lane.task = None
            # Only non-empty when this task was cancelled (its loop is closing): nobody
            # will serve these callers, so they must not wait forever.
            for _, future in lane.queue:
                future.cancel()
            lane.queue.clear()

    async def _next_batch(self, lane: _Lane[T, R]) -> list[tuple[T, asyncio.Future[R]]]:
        if self.max_wait_s > 0 and 0 < lane.live() < self.max_batch:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait_s
            while lane.live() < self.max_batch and loop.time() < deadline:
                lane.arrived.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await lane.arrived.wait()
                except TimeoutError:
                    break
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while lane.queue and len(batch) < self.max_batch:
            entry = lane.queue.popleft()
            if not entry[1].done():
                batch.append(entry)
        return batch

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _call(self, items: list[T]) -> list[R]:
        self.stats.record(len(items))
        if self.kind is not None:
            self.telemetry.batch(self.kind, len(items))
        results = await anyio.to_thread.run_sync(self._fn, items, limiter=self._limiter)
        if len(results) != len(items):
            raise RagError(f"{self._name}: {len(results)} results for {len(items)} inputs")
        return list(results)
