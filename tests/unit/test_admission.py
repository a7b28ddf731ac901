"""Admission control for generation: places taken at once while free, a FIFO queue behind them,
429 with Retry-After beyond it; a waiter that leaves frees its place in the queue, one that
waits too long gets 503; an admitted stream holds its place until it ends however it ends, and
ends with 504 past its deadline, its inner stream closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.errors import envelope, error_headers
from app.services import UPSTREAM_MAX_CONCURRENT, max_concurrent_for
from pipelines.admission import RETRY_AFTER_MAX_S, Admission, AdmittedGenerator
from pipelines.errors import (
    GenerationFailed,
    Overloaded,
    QueueTimeout,
    RateLimited,
    UpstreamTimeout,
)
from pipelines.types import ChatMessage, GenerationChunk, GenerationRequest

# How long a test waits for something that should happen at once (only a failing test waits).
WAIT_S = 5.0
REQUEST = GenerationRequest(
    messages=[ChatMessage("user", "How hot is Venus?")], max_tokens=8, temperature=0.0
)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until `condition` holds (bounded: a failing test says what it missed)."""
    try:
        async with asyncio.timeout(WAIT_S):
            # The gate's counters are what the test observes; it has no events to wait on.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


async def hold(admission: Admission, release: asyncio.Event, order: list[str], name: str) -> None:
    async with admission.place():
        order.append(name)
        await release.wait()


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)


@dataclass
class GatedGenerator:
    """Each stream yields one token, then waits for `go` before its last; `stall` makes it wait
    forever instead. Counts streams begun and closed before their end (aborted)."""

    stall: bool = False
    fail_after_first: bool = False
    go: asyncio.Event = field(default_factory=asyncio.Event)
    begun: int = 0
    finished: int = 0
    aborted: int = 0

    @property
    def model_names(self) -> list[str]:
        return ["gated"]

    @property
    def max_model_len(self) -> int:
        return 2048

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def ready(self) -> bool:
        return True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.begun += 1
        done = False
        try:
            yield GenerationChunk("Venus ")
            if self.fail_after_first:
                raise GenerationFailed("upstream generator died mid-stream")
            await (asyncio.Event() if self.stall else self.go).wait()
            yield GenerationChunk("is hot.", finish_reason="stop")
            done = True
        finally:
            if done:
                self.finished += 1
            else:
                self.aborted += 1

    async def close(self) -> None:
        return None


def admitted(
    generator: GatedGenerator, capacity: int = 1, queue: int = 1, timeout_s: float = 60.0
) -> AdmittedGenerator:
    return AdmittedGenerator(generator, Admission(capacity, queue, 30.0), timeout_s=timeout_s)


# -- the gate ------------------------------------------------------------------------------


async def test_a_free_place_is_taken_at_once_and_given_back_after() -> None:
    admission = Admission(2, 1, 30.0)
    admission.check()
    async with admission.place():
        assert (admission.running, admission.queued, admission.capacity) == (1, 0, 2)
    assert admission.running == 0


async def test_at_capacity_requests_wait_and_get_places_in_arrival_order() -> None:
    admission = Admission(1, 4, 30.0)
    order: list[str] = []
    gates = {name: asyncio.Event() for name in "abcd"}
    first = spawn(hold(admission, gates["a"], order, "a"))
    await until(lambda: order == ["a"], "the first to be admitted")
    rest = []
    for name in "bcd":
        rest.append(spawn(hold(admission, gates[name], order, name)))
        await until(lambda: admission.queued == len(rest), f"{name} to queue")
    admission.check()  # one more could still queue: no refusal yet
    assert (admission.running, admission.queued) == (1, 3)
    for name in "abcd":
        gates[name].set()
    await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_S)
    assert order == ["a", "b", "c", "d"]
    assert (admission.running, admission.queued) == (0, 0)


async def test_over_capacity_and_queue_is_overloaded_with_retry_after() -> None:
    admission = Admission(1, 1, 30.0)
    release = asyncio.Event()
    order: list[str] = []
    tasks = [spawn(hold(admission, release, order, "a"))]
    await until(lambda: admission.running == 1, "the first to run")
    tasks.append(spawn(hold(admission, release, order, "b")))
    await until(lambda: admission.queued == 1, "the second to queue")
    with pytest.raises(Overloaded) as refused:
        await admission.acquire()
    with pytest.raises(Overloaded):
        admission.check()  # the pre-check refuses the same, before any work
    error = refused.value
    assert isinstance(error, RateLimited) and error.status == 429 and error.retryable
    assert error.code == "overloaded" and error.retry_after_s >= 1
    assert error.response_headers() == {"Retry-After": str(error.retry_after_s)}
    assert "RAG_LLM__MAX_CONCURRENT=1" in error.message and "RAG_LLM__MAX_QUEUE=1" in error.message
    assert (admission.running, admission.queued) == (1, 1)  # the refusal took nothing
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def test_no_queue_refuses_as_soon_as_every_place_is_taken() -> None:
    admission = Admission(1, 0, 30.0)
    await admission.acquire()
    with pytest.raises(Overloaded):
        await admission.acquire()
    admission.release()
    await admission.acquire()  # free again
    admission.release()


async def test_retry_after_follows_how_long_places_are_held() -> None:
    now = [0.0]
    admission = Admission(2, 10, 30.0, clock=lambda: now[0])
    assert admission.retry_after_s() == 1  # nothing measured yet: the floor
    for _ in range(3):
        async with admission.place():
            now[0] += 10.0  # each generation holds its place 10 s
    # Nobody waiting: one more is served after 1 × 10 s / 2 places.
    assert admission.retry_after_s() == 5
    for _ in range(2):
        await admission.acquire()
    waiting = [spawn(admission.acquire()) for _ in range(3)]
    await until(lambda: admission.queued == 3, "three to queue")
    assert admission.retry_after_s() == 20  # (3 waiting + 1) × 10 s / 2 places
    for task in waiting:
        await cancelled(task)
    for _ in range(2):
        admission.release()
    slow = Admission(1, 10, 30.0, clock=lambda: now[0])
    async with slow.place():
        now[0] += 3600.0
    assert slow.retry_after_s() == RETRY_AFTER_MAX_S  # capped: SDKs ignore longer waits


async def test_a_waiter_that_leaves_frees_its_place_in_the_queue_at_once() -> None:
    admission = Admission(1, 2, 30.0)
    order: list[str] = []
    release = asyncio.Event()
    first = spawn(hold(admission, release, order, "a"))
    await until(lambda: admission.running == 1, "the first to run")
    leaver = spawn(hold(admission, release, order, "b"))
    stayer = spawn(hold(admission, release, order, "c"))
    await until(lambda: admission.queued == 2, "two to queue")
    await cancelled(leaver)
    assert admission.queued == 1
    late = spawn(hold(admission, release, order, "d"))  # the freed place in the queue is usable
    await until(lambda: admission.queued == 2, "a newcomer to queue")
    release.set()
    await asyncio.wait_for(asyncio.gather(first, stayer, late), WAIT_S)
    assert order == ["a", "c", "d"]
    assert (admission.running, admission.queued) == (0, 0)


async def test_a_place_handed_to_a_waiter_that_just_left_goes_to_the_next() -> None:
    admission = Admission(1, 2, 30.0)
    await admission.acquire()
    leaver = spawn(admission.acquire())
    next_one = spawn(admission.acquire())
    await until(lambda: admission.queued == 2, "two to queue")
    admission.release()  # handed to `leaver`, which is cancelled before it runs again
    await cancelled(leaver)
    await asyncio.wait_for(next_one, WAIT_S)
    assert (admission.running, admission.queued) == (1, 0)
    admission.release()
    assert admission.running == 0


async def test_waiting_past_the_queue_timeout_is_503_retryable() -> None:
    admission = Admission(1, 1, queue_timeout_s=0.05)
    await admission.acquire()
    with pytest.raises(QueueTimeout) as waited:
        await admission.acquire()
    error = waited.value
    assert error.status == 503 and error.retryable and error.code == "queue_timeout"
    assert "RAG_LLM__QUEUE_TIMEOUT_S" in error.message
    assert int((error.response_headers() or {})["Retry-After"]) >= 1
    assert (admission.running, admission.queued) == (1, 0)
    admission.release()
    assert admission.running == 0


# -- the admitted generator ----------------------------------------------------------------


async def test_an_admitted_stream_holds_its_place_until_its_end() -> None:
    inner = GatedGenerator()
    gen = admitted(inner)
    inner.go.set()
    chunks = [c.text async for c in gen.stream(REQUEST)]
    assert chunks == ["Venus ", "is hot."]
    assert (inner.finished, gen.admission.running) == (1, 0)
    assert gen.model_names == ["gated"] and gen.max_model_len == 2048
    assert gen.count_tokens("a b") == 2 and await gen.ready()


async def test_a_stream_never_iterated_takes_no_place() -> None:
    inner = GatedGenerator()
    gen = admitted(inner)
    stream = gen.stream(REQUEST)
    assert gen.admission.running == 0
    await stream.aclose()
    assert (inner.begun, gen.admission.running) == (0, 0)


async def test_closing_a_stream_early_aborts_it_and_frees_its_place() -> None:
    inner = GatedGenerator()
    gen = admitted(inner)
    stream = gen.stream(REQUEST)
    assert (await anext(stream)).text == "Venus "
    assert gen.admission.running == 1
    await stream.aclose()
    assert (inner.aborted, gen.admission.running) == (1, 0)


async def test_a_failing_stream_frees_its_place() -> None:
    inner = GatedGenerator(fail_after_first=True)
    gen = admitted(inner)
    with pytest.raises(GenerationFailed):
        async for _ in gen.stream(REQUEST):
            pass
    assert gen.admission.running == 0


async def test_a_consumer_cancelled_mid_stream_frees_its_place() -> None:
    inner = GatedGenerator()
    gen = admitted(inner)

    async def consume() -> None:
        async for _ in gen.stream(REQUEST):
            pass

    task = spawn(consume())
    await until(lambda: inner.begun == 1 and gen.admission.running == 1, "the stream to run")
    await cancelled(task)
    assert (inner.aborted, gen.admission.running) == (1, 0)


async def test_a_second_stream_waits_for_the_first_to_end() -> None:
    inner = GatedGenerator()
    gen = admitted(inner, capacity=1, queue=1)

    async def consume() -> list[str]:
        return [c.text async for c in gen.stream(REQUEST)]

    first = spawn(consume())
    await until(lambda: inner.begun == 1, "the first stream to begin")
    second = spawn(consume())
    await until(lambda: gen.admission.queued == 1, "the second to queue")
    assert inner.begun == 1
    inner.go.set()
    results = await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    assert list(results) == [["Venus ", "is hot."]] * 2
    assert (inner.finished, gen.admission.running, gen.admission.queued) == (2, 0, 0)


async def test_a_generation_past_its_deadline_is_504_and_its_stream_is_closed() -> None:
    inner = GatedGenerator(stall=True)
    gen = admitted(inner, timeout_s=0.05)
    stream = gen.stream(REQUEST)
    assert (await anext(stream)).text == "Venus "
    with pytest.raises(UpstreamTimeout) as late:
        await anext(stream)
    assert late.value.status == 504 and late.value.code == "upstream_timeout"
    assert "RAG_LLM__TIMEOUT_S=0.05" in late.value.message
    assert (inner.aborted, gen.admission.running) == (1, 0)


async def test_the_deadline_never_cancels_the_consumers_own_work() -> None:
    inner = GatedGenerator()
    gen = admitted(inner, timeout_s=0.05)
    stream = gen.stream(REQUEST)
    await anext(stream)
    await asyncio.sleep(0.1)  # the consumer's work between chunks, past the deadline: not cut
    with pytest.raises(UpstreamTimeout):
        await anext(stream)  # the next step is already past the whole generation's deadline
    assert (inner.aborted, gen.admission.running) == (1, 0)


# -- sizing and the wire -------------------------------------------------------------------


@dataclass
class BatchingGenerator(GatedGenerator):
    max_num_seqs: int = 8  # what the in-process engine reports


def test_the_gate_is_sized_by_the_setting_else_the_engine_else_a_default() -> None:
    assert max_concurrent_for(BatchingGenerator(), 3) == 3
    assert max_concurrent_for(BatchingGenerator(), None) == 8
    assert max_concurrent_for(GatedGenerator(), None) == UPSTREAM_MAX_CONCURRENT


def test_a_429_answers_as_openai_does_with_both_retry_headers() -> None:
    overloaded = Overloaded("at capacity", 7)
    assert error_headers(overloaded) == {"Retry-After": "7", "retry-after-ms": "7000"}
    body = envelope(overloaded, "rid").body()["error"]
    assert (body["code"], body["type"], body["retryable"]) == ("overloaded", "requests", True)
    assert envelope(RateLimited("over", 3), "rid").error.type == "requests"
    waited = QueueTimeout("waited", 4)
    assert error_headers(waited) == {"Retry-After": "4", "retry-after-ms": "4000"}
    assert envelope(waited, "rid").error.type == "server_error"
    assert envelope(UpstreamTimeout("slow"), "rid").error.type == "server_error"
    assert error_headers(GenerationFailed("died")) is None
