"""The coalescing queue under group commit and balance reads: batches, waiters, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from billing_service.service_layer.coalescing import Coalescer, PerTarget

T = TypeVar("T")


class Gated:
    """A batch function that records its batches and holds the first one at a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(10)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def wait_for(condition: object, what: str) -> None:
    """Poll a condition (not a sleep standing in for one), failing after a deadline."""
    deadline = time.monotonic() + 10
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


async def within(awaitable: Awaitable[T]) -> T:
    """awaitable's result, failing the test (not hanging it) if it takes over 10 s."""
    return await asyncio.wait_for(awaitable, 10)


async def until_queued(coalescer: Coalescer[int, int], count: int) -> None:
    deadline = time.monotonic() + 10
    while coalescer.queued() < count:
        assert time.monotonic() < deadline, f"timed out waiting for {count} queued"
        await asyncio.sleep(0.001)  # yields to the loop so the callers can queue


async def test_coroutines_queued_behind_a_batch_share_the_next_one() -> None:
    run = Gated()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    first = asyncio.ensure_future(coalescer.call_async(1))
    await asyncio.to_thread(run.entered.wait, 10)
    rest = [asyncio.ensure_future(coalescer.call_async(n)) for n in range(2, 12)]
    await until_queued(coalescer, 10)
    run.gate.set()

    assert await within(asyncio.gather(first, *rest)) == [n * 10 for n in range(1, 12)]
    assert run.batches == [[1], list(range(2, 12))]
    assert run.threads == {"test_0"}  # the coalescer's thread ran both, not the loop's
    assert coalescer.queued() == 0


async def test_batches_hold_at_most_max_batch_calls_in_arrival_order() -> None:
    run = Gated()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=2, name="test")
    first = asyncio.ensure_future(coalescer.call_async(0))
    await asyncio.to_thread(run.entered.wait, 10)
    rest = [asyncio.ensure_future(coalescer.call_async(n)) for n in range(1, 6)]
    await until_queued(coalescer, 5)
    run.gate.set()

    assert await within(asyncio.gather(first, *rest)) == [n * 10 for n in range(6)]
    assert run.batches == [[0], [1, 2], [3, 4], [5]]


async def test_a_thread_queued_among_coroutines_leads_its_batch_for_them() -> None:
    run = Gated()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    first = asyncio.ensure_future(coalescer.call_async(1))
    await asyncio.to_thread(run.entered.wait, 10)
    by_thread: list[int] = []
    thread = threading.Thread(target=lambda: by_thread.append(coalescer.call(2)))
    thread.start()
    await until_queued(coalescer, 1)
    later = [asyncio.ensure_future(coalescer.call_async(n)) for n in (3, 4)]
    await until_queued(coalescer, 3)
    run.gate.set()

    assert await within(asyncio.gather(first, *later)) == [10, 30, 40]
    await asyncio.to_thread(thread.join, 10)
    assert by_thread == [20]
    assert run.batches == [[1], [2, 3, 4]]
    assert thread.name in run.threads  # the waiting thread ran the second batch itself


async def test_each_caller_gets_its_own_error_and_a_failing_batch_fails_only_itself() -> None:
    calls = 0

    def run(items: list[int]) -> Sequence[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the whole batch failed")
        return [ValueError("negative") if i < 0 else i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    with pytest.raises(RuntimeError, match="whole batch"):
        await within(coalescer.call_async(1))
    results = await within(
        asyncio.gather(coalescer.call_async(2), coalescer.call_async(-3), return_exceptions=True)
    )
    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert await within(coalescer.call_async(4)) == 4  # the lane went on


async def test_callers_of_a_failed_batch_each_raise_their_own_copy_of_its_error() -> None:
    entered, gate = threading.Event(), threading.Event()

    def run(items: list[int]) -> Sequence[int | BaseException]:
        if items == [1]:
            entered.set()
            assert gate.wait(10)
            return [10]
        raise LookupError("the whole batch failed")

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    first = asyncio.ensure_future(coalescer.call_async(1))
    await asyncio.to_thread(entered.wait, 10)
    failed = [asyncio.ensure_future(coalescer.call_async(n)) for n in (2, 3, 4)]
    await until_queued(coalescer, 3)
    gate.set()

    assert await within(first) == 10
    errors = await within(asyncio.gather(*failed, return_exceptions=True))
    assert [type(e) for e in errors] == [LookupError] * 3
    assert {str(e) for e in errors} == {"the whole batch failed"}
    assert len({id(e) for e in errors}) == 3  # a raise in one caller leaves the others' alone
    assert all(e.__traceback__ is not None for e in errors)


async def test_a_caller_cancelled_while_queued_is_never_run() -> None:
    run = Gated()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    first = asyncio.ensure_future(coalescer.call_async(1))
    await asyncio.to_thread(run.entered.wait, 10)
    doomed = asyncio.ensure_future(coalescer.call_async(2))
    kept = asyncio.ensure_future(coalescer.call_async(3))
    await until_queued(coalescer, 2)
    doomed.cancel()
    run.gate.set()

    assert await within(asyncio.gather(first, kept)) == [10, 30]
    assert doomed.cancelled()
    assert run.batches == [[1], [3]]  # the caller gave up before its call began: it never ran
    assert coalescer.queued() == 0


def test_threads_alone_lead_in_turn() -> None:
    run = Gated()
    run.gate.set()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    results: dict[int, int] = {}

    def call(n: int) -> None:
        results[n] = coalescer.call(n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: n * 10 for n in range(20)}
    assert sorted(i for batch in run.batches for i in batch) == list(range(20))
    assert not any(name.startswith("test_") for name in run.threads)  # no helper thread


async def test_coroutines_queued_behind_a_thread_are_run_by_the_coalescer() -> None:
    run = Gated()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=64, name="test")
    by_thread: list[int] = []
    thread = threading.Thread(target=lambda: by_thread.append(coalescer.call(1)), name="caller")
    thread.start()
    await asyncio.to_thread(run.entered.wait, 10)
    later = [asyncio.ensure_future(coalescer.call_async(n)) for n in (2, 3)]
    await until_queued(coalescer, 2)
    run.gate.set()

    assert await within(asyncio.gather(*later)) == [20, 30]
    await asyncio.to_thread(thread.join, 10)
    assert by_thread == [10]
    assert run.batches == [[1], [2, 3]]
    assert run.threads == {"caller", "test_0"}


def test_per_target_makes_one_coalescer_per_target_even_when_first_asked_at_once() -> None:
    made: list[tuple[object, ...]] = []

    def make(*targets: object) -> Coalescer[int, int]:
        made.append(targets)
        return Coalescer(lambda items: items, max_batch=4, name="per-target")

    per_target: PerTarget[int, int] = PerTarget(make)
    a, b, clock = object(), object(), object()
    start = threading.Barrier(8)

    def first_use(_: int) -> Coalescer[int, int]:
        start.wait()
        return per_target.get(a, clock)

    with ThreadPoolExecutor(8) as pool:
        got = set(pool.map(first_use, range(8)))

    assert len(got) == 1 and made == [(a, clock)]
    assert per_target.get(b, clock) is not per_target.get(a, clock)
    assert per_target.existing(a, clock) is got.pop()
    assert per_target.existing(a, b) is None
