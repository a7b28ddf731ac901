"""The micro-batcher against a gated batch function: who goes in which call, and what each
caller gets back (results, errors, cancellation), with no model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from pipelines.errors import ConfigError, RagError
from pipelines.microbatch import MicroBatcher

WAIT_S = 10.0  # every wait is bounded; a passing run never gets near it


class GatedFn:
    """A batch function that records each call, announces it to the loop, and blocks in its
    worker thread while the gate is closed. Items containing "bad" make it raise."""

    def __init__(self, *, closed: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        if not closed:
            self.gate.set()
        self._loop = asyncio.get_running_loop()
        self._started: asyncio.Queue[list[str]] = asyncio.Queue()

    def __call__(self, items: list[str]) -> Sequence[str]:
        self.calls.append(list(items))
        self._loop.call_soon_threadsafe(self._started.put_nowait, list(items))
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        if any("bad" in item for item in items):
            raise ValueError(f"bad batch {items}")
        return [f"<{item}>" for item in items]

    async def started(self) -> list[str]:
        """The items of the next call to start."""
        return await asyncio.wait_for(self._started.get(), WAIT_S)


async def settle() -> None:
    """Let every task already scheduled run up to its next wait (each queues its item)."""
    for _ in range(3):
        await asyncio.sleep(0)


def submit_all(batcher: MicroBatcher[str, str], items: Sequence[str]) -> list[asyncio.Task[str]]:
    return [asyncio.create_task(batcher.submit(item)) for item in items]


async def gather(tasks: Sequence[asyncio.Task[str]]) -> list[str | BaseException]:
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)


async def test_a_lone_submit_is_computed_at_once_in_a_call_of_its_own() -> None:
    fn = GatedFn()
    batcher = MicroBatcher(fn)
    assert await asyncio.wait_for(batcher.submit("a"), WAIT_S) == "<a>"
    assert fn.calls == [["a"]]
    assert (batcher.stats.calls, batcher.stats.items, batcher.stats.last_batch) == (1, 1, 1)


async def test_submits_made_during_a_call_go_together_in_the_next_call() -> None:
    fn = GatedFn(closed=True)
    batcher = MicroBatcher(fn, max_batch=64)
    first = submit_all(batcher, ["a"])
    assert await fn.started() == ["a"]
    rest = submit_all(batcher, [f"q{i}" for i in range(10)])
    await settle()
    fn.gate.set()
    results = await gather(first + rest)
    assert results == ["<a>"] + [f"<q{i}>" for i in range(10)]
    assert fn.calls == [["a"], [f"q{i}" for i in range(10)]]
    assert (batcher.stats.calls, batcher.stats.items, batcher.stats.max_batch) == (2, 11, 10)


async def test_more_waiting_callers_than_max_batch_are_split_in_arrival_order() -> None:
    fn = GatedFn(closed=True)
    batcher = MicroBatcher(fn, max_batch=4)
    first = submit_all(batcher, ["a"])
    await fn.started()
    rest = submit_all(batcher, [str(i) for i in range(10)])
    await settle()
    fn.gate.set()
    results = await gather(first + rest)
    assert results == ["<a>"] + [f"<{i}>" for i in range(10)]
    assert fn.calls == [["a"], ["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    assert batcher.stats.last_batch == 2 and batcher.stats.max_batch == 4


async def test_a_burst_submitted_together_is_one_call() -> None:
    fn = GatedFn()
    batcher = MicroBatcher(fn)
    results = await gather(submit_all(batcher, [str(i) for i in range(32)]))
    assert results == [f"<{i}>" for i in range(32)]
    assert fn.calls == [[str(i) for i in range(32)]]


async def test_max_batch_one_makes_one_call_per_caller() -> None:
    fn = GatedFn()
    batcher = MicroBatcher(fn, max_batch=1)
    assert await gather(submit_all(batcher, ["a", "b", "c"])) == ["<a>", "<b>", "<c>"]
    assert sorted(fn.calls) == [["a"], ["b"], ["c"]]


async def test_an_error_reaches_the_callers_of_its_batch_only() -> None:
    fn = GatedFn(closed=True)
    batcher = MicroBatcher(fn, max_batch=2)
    first = submit_all(batcher, ["a"])
    await fn.started()
    rest = submit_all(batcher, ["b", "bad", "c"])
    await settle()
    fn.gate.set()
    a, b, bad, c = await gather(first + rest)
    assert fn.calls == [["a"], ["b", "bad"], ["c"]]
    assert (a, c) == ("<a>", "<c>")
    assert isinstance(b, ValueError) and b is bad


async def test_a_wrong_number_of_results_is_an_error_for_the_whole_batch() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(lambda items: ["only one"])
    results = await gather(submit_all(batcher, ["a", "b"]))
    assert all(isinstance(r, RagError) for r in results)


async def test_a_caller_cancelled_while_queued_is_left_out_of_the_call() -> None:
    fn = GatedFn(closed=True)
    batcher = MicroBatcher(fn)
    first = submit_all(batcher, ["a"])
    await fn.started()
    b, gone, c = submit_all(batcher, ["b", "gone", "c"])
    await settle()
    gone.cancel()
    fn.gate.set()
    assert await gather([*first, b, c]) == ["<a>", "<b>", "<c>"]
    assert gone.cancelled()
    assert fn.calls == [["a"], ["b", "c"]]


async def test_a_caller_cancelled_during_its_call_does_not_hold_up_the_others() -> None:
    fn = GatedFn(closed=True)
    batcher = MicroBatcher(fn)
    (leaving,) = submit_all(batcher, ["leaving"])
    await fn.started()
    rest = submit_all(batcher, ["b", "c"])
    await settle()
    leaving.cancel()
    await settle()
    fn.gate.set()
    assert await gather(rest) == ["<b>", "<c>"]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(leaving, WAIT_S)
    assert fn.calls == [["leaving"], ["b", "c"]]


async def test_max_wait_holds_a_call_until_the_batch_is_full() -> None:
    fn = GatedFn()
    batcher = MicroBatcher(fn, max_batch=3, max_wait_ms=60_000)
    first = submit_all(batcher, ["a"])
    await settle()
    assert fn.calls == []  # held for company: without max_wait it would have run alone
    rest = submit_all(batcher, ["b", "c"])
    assert await gather(first + rest) == ["<a>", "<b>", "<c>"]
    assert fn.calls == [["a", "b", "c"]]


async def test_max_wait_lets_a_lone_caller_go_when_the_window_ends() -> None:
    fn = GatedFn()
    batcher = MicroBatcher(fn, max_batch=8, max_wait_ms=5)
    assert await asyncio.wait_for(batcher.submit("a"), WAIT_S) == "<a>"
    assert fn.calls == [["a"]]


def test_one_batcher_serves_callers_on_several_event_loops_and_leaves_no_task() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(lambda items: [i.upper() for i in items])

    async def burst(tag: str) -> tuple[list[str], int]:
        results = await asyncio.gather(*(batcher.submit(f"{tag}{i}") for i in range(4)))
        await settle()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return list(results), len(others)

    for tag in ("x", "y"):
        assert asyncio.run(burst(tag)) == ([f"{tag.upper()}{i}" for i in range(4)], 0)
    assert batcher.stats.calls == 2 and batcher.stats.items == 8


def test_max_batch_below_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        MicroBatcher(lambda items: items, max_batch=0)
