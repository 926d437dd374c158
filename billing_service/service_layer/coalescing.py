"""Coalescing: concurrent calls queue, and one batch at a time per lane runs for all of them.

A lane has at most one batch in flight. Calls that arrive while it runs queue behind it, and
the next batch takes up to `max_batch` of them. Each caller gets back its own result or error.

Callers wait in one of two ways, and may mix in one lane:
- a thread (`call`) leads the batch itself when its turn comes, as the first of the queue;
- a coroutine (`call_async`) waits on a future while a thread of the coalescer's own (one per
  lane) runs its batch, and that thread goes on with whatever queued meanwhile. The event loop
  is woken once per batch, not once per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Run = Callable[[list[T]], Sequence[R | BaseException]]
"""Runs one batch: each item's result, or the error to raise in its caller, in order."""


@dataclass(slots=True)
class _Slot(Generic[T, R]):
    item: T
    result: R | None = None
    error: BaseException | None = None
    finished: bool = False
    promoted: bool = False
    wake: threading.Event | None = None
    future: asyncio.Future[R] | None = None


class Coalescer(Generic[T, R]):
    """Lanes of queued calls, each run by one batch at a time."""

    def __init__(self, run: Run[T, R], *, max_batch: int, lanes: int = 1, name: str) -> None:
        self._run = run
        self._max_batch = max_batch
        self._lanes = lanes
        self._name = name
        self._lock = threading.Lock()
        self._queues: dict[int, list[_Slot[T, R]]] = {}
        self._threads: ThreadPoolExecutor | None = None

    def queued(self, lane: int = 0) -> int:
        """Calls in the lane not yet taken into a batch."""
        with self._lock:
            return len(self._queues.get(lane, ()))

    def call(self, item: T, lane: int = 0) -> R:
        """Queue item, lead its batch when it is this call's turn, and return its result."""
        slot: _Slot[T, R] = _Slot(item, wake=threading.Event())
        if self._enqueue(lane, slot):
            self._lead(lane)
        assert slot.wake is not None
        while not slot.finished:
            slot.wake.wait()
            slot.wake.clear()
            if slot.promoted and not slot.finished:
                slot.promoted = False
                self._lead(lane)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # R itself may include None

    async def call_async(self, item: T, lane: int = 0) -> R:
        """call, for a coroutine: the batch runs on the coalescer's threads.

        A caller cancelled while its call waits in the queue takes it out (it never runs); once
        its batch has begun, the call runs to the end whatever happens to the caller.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        slot: _Slot[T, R] = _Slot(item, future=future)
        if self._enqueue(lane, slot):
            self._start_drain(lane)
        return await future

    def _enqueue(self, lane: int, slot: _Slot[T, R]) -> bool:
        """Queue slot; True when nothing was running in the lane, so it must lead."""
        with self._lock:
            queue = self._queues.get(lane)
            if queue is None:
                self._queues[lane] = [slot]
                return True
            queue.append(slot)
            return False

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self._lanes, thread_name_prefix=self._name)
            return self._threads

    def _start_drain(self, lane: int) -> None:
        """Have a coalescer thread run the lane; if none can start (the interpreter is shutting
        down), every call queued there gets the error rather than waiting forever."""
        try:
            self._pool().submit(self._drain, lane)
        except RuntimeError as error:
            self._fail_lane(lane, error)

    def _drain(self, lane: int) -> None:
        """Run the lane's batches until it is empty or a thread's call is next to lead."""
        try:
            while self._lead(lane, hand_on=False):
                pass
        except BaseException as error:  # a bug: say so, as the executor would keep it to itself
            log.exception("coalescer %s: lane %d failed", self._name, lane)
            self._fail_lane(lane, error)
            raise

    def _fail_lane(self, lane: int, error: BaseException) -> None:
        """Give every call queued in the lane the error, rather than leave it waiting for a
        leader that will never come, and free the lane for the calls after."""
        with self._lock:
            stranded = self._queues.pop(lane, [])
        self._settle_all(stranded, [error] * len(stranded))

    def _lead(self, lane: int, *, hand_on: bool = True) -> bool:
        """Run the next batch, then hand the lane on. True when the caller should run the
        next batch itself (only when not hand_on, and a coroutine's call is next)."""
        with self._lock:
            queue = self._queues[lane]
            batch = queue[: self._max_batch]
            del queue[: self._max_batch]
        # A coroutine cancelled while it queued (its caller gave up) is not run.
        batch = [slot for slot in batch if slot.future is None or not slot.future.cancelled()]
        if batch:
            self._finish(batch)
        with self._lock:
            queue = self._queues[lane]
            if not queue:
                del self._queues[lane]
                return False
            following = queue[0]
        if following.wake is not None:  # a thread waits for its turn: it leads
            following.promoted = True
            following.wake.set()
            return False
        if hand_on:  # a coroutine's call: the coalescer's thread runs it
            self._start_drain(lane)
            return False
        return True

    def _finish(self, batch: list[_Slot[T, R]]) -> None:
        results: Sequence[R | BaseException]
        try:
            results = self._run([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} calls")
        except BaseException as error:  # every call gets it: none was answered
            results = [error] * len(batch)
        self._settle_all(batch, results)

    def _settle_all(self, batch: list[_Slot[T, R]], results: Sequence[R | BaseException]) -> None:
        """Give each call its result or error and wake whoever waits for it."""
        waiting: dict[asyncio.AbstractEventLoop, list[_Slot[T, R]]] = {}
        errors: set[int] = set()
        for slot, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                # One error for many calls (the whole batch failed): each caller raises its
                # own copy, so their raises do not rewrite one traceback across threads.
                slot.error = _copy(result) if id(result) in errors else result
                errors.add(id(result))
            else:
                slot.result = result
            slot.finished = True
            if slot.future is not None:
                waiting.setdefault(slot.future.get_loop(), []).append(slot)
            else:
                assert slot.wake is not None
                slot.wake.set()
        for loop, settled in waiting.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)


def _copy(error: BaseException) -> BaseException:
    """A copy of error with its traceback and chain; error itself when it cannot be rebuilt
    from its arguments."""
    try:
        copied = copy.copy(error)
    except Exception:
        return error
    copied.__traceback__ = error.__traceback__
    copied.__cause__ = error.__cause__
    copied.__context__ = error.__context__
    copied.__suppress_context__ = error.__suppress_context__
    return copied


def _settle(batch: list[_Slot[Any, Any]]) -> None:
    """On the event loop: hand each finished call's result to its waiting coroutine."""
    for slot in batch:
        future = slot.future
        assert future is not None
        if future.done():  # the caller was cancelled
            continue
        if slot.error is not None:
            future.set_exception(slot.error)
        else:
            future.set_result(slot.result)


class PerTarget(Generic[T, R]):
    """One coalescer per target (a database; a database and a clock), made on first use.

    Keyed by the targets' ids; each entry keeps its targets alive, so an id cannot be reused
    by another object while its key is here. In production there is one target per process.
    """

    def __init__(self, make: Callable[..., Coalescer[T, R]]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._by_key: dict[tuple[int, ...], tuple[tuple[object, ...], Coalescer[T, R]]] = {}

    def get(self, *targets: object) -> Coalescer[T, R]:
        """The targets' coalescer, made by make(*targets) on first use."""
        key = tuple(id(target) for target in targets)
        found = self._by_key.get(key)
        if found is None:
            with self._lock:
                found = self._by_key.get(key)
                if found is None:
                    found = self._by_key[key] = (targets, self._make(*targets))
        return found[1]

    def existing(self, *targets: object) -> Coalescer[T, R] | None:
        """The targets' coalescer if one was made."""
        found = self._by_key.get(tuple(id(target) for target in targets))
        return None if found is None else found[1]
