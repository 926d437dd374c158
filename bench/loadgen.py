"""Load-generator processes and the measurement of one cell (a scenario at a concurrency).

`LoadGenerators` spawns its worker processes once (multiprocessing "spawn", so nothing of the
parent's gRPC state is inherited) and reuses them for every cell. For a cell of C clients it
uses min(C, processes) workers with C split between them, each client a thread with its own
channel or database connection. A cell runs in three steps so that every client starts
together and only steady-state calls are measured:

1. every worker opens its clients' connections; its threads meet on a threading.Barrier and
   the worker reports "ready";
2. once all are ready the parent sends one start time on CLOCK_MONOTONIC (shared by every
   process on the machine); the threads pass a second Barrier and wait for it;
3. each thread repeats its operation for warmup + duration seconds. A call that completes
   inside the measured window [start + warmup, start + warmup + duration] is counted, with its
   latency (perf_counter_ns around the call) when it succeeded and its status code when it
   failed; no call starts after the window closes.

Requests per second is the measured window's successful completions over its length;
percentiles are exact (nearest rank) over the merged samples of every thread.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import threading
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import grpc
import scenarios

READY_TIMEOUT = 60.0
"""Seconds the workers may take to connect all their clients."""
START_DELAY_NS = 100_000_000

Probe = Callable[[], tuple[float, ...]]
"""Counters to read at the edges of the measured window."""
"""How far ahead of "now" the parent sets the start, so every worker hears of it in time."""
RESULT_GRACE = 60.0
"""Seconds past the end of the window a worker may take to hand in its samples."""


class LoadError(RuntimeError):
    """A worker could not run its part of a cell; the message carries its traceback."""


@dataclass(frozen=True)
class CellPlan:
    """What to drive: a scenario, how many clients, and for how long."""

    scenario: str
    concurrency: int
    warmup_s: float
    duration_s: float


@dataclass
class Measurement:
    """The merged outcome of one cell."""

    plan: CellPlan
    latencies_ns: array[int]
    errors: Counter[str] = field(default_factory=Counter)
    probed: tuple[float, ...] | None = None
    """How much the probe's counters rose over the measured window (None without a probe)."""

    @property
    def completed(self) -> int:
        """Successful operations in the window."""
        return len(self.latencies_ns)

    @property
    def rate(self) -> float:
        """Successful operations per second over the window."""
        return self.completed / self.plan.duration_s

    def percentile_ms(self, quantile: float) -> float | None:
        """The exact nearest-rank percentile in milliseconds, or None without samples."""
        if not self.latencies_ns:
            return None
        rank = max(1, math.ceil(quantile * len(self.latencies_ns)))
        return self.latencies_ns[rank - 1] / 1e6


class LoadGenerators:
    """A fixed pool of worker processes that drive the fixture's scenarios, cell by cell."""

    def __init__(self, processes: int, fixture: scenarios.Fixture) -> None:
        """Remember the pool size; the processes start on __enter__."""
        self._size = processes
        self._fixture = fixture
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def __enter__(self) -> LoadGenerators:
        """Spawn the workers and hand each the fixture."""
        context = multiprocessing.get_context("spawn")
        for index in range(self._size):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(index, child_end), name=f"bench-load-{index}"
            )
            process.start()
            child_end.close()
            parent_end.send(("fixture", self._fixture))
            self._workers.append((process, parent_end))
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        """Ask every worker to stop; terminate any that does not within a few seconds."""
        for _process, conn in self._workers:
            with suppress(OSError):
                conn.send(("stop",))
        for process, conn in self._workers:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()
        self._workers.clear()

    def run(self, plan: CellPlan, probe: Probe | None = None) -> Measurement:
        """Drive one cell and return the merged measurement.

        probe, when given, is read as the measured window opens and as it closes (by this
        process's clock, which the workers' window follows), and the measurement keeps how
        much its counters rose.
        """
        shares = _split(plan.concurrency, min(self._size, plan.concurrency))
        active = self._workers[: len(shares)]
        for (_process, conn), threads in zip(active, shares, strict=True):
            conn.send(("cell", plan, threads))
        failures = []
        for index, (_process, conn) in enumerate(active):
            reply = _receive(conn, READY_TIMEOUT, f"worker {index} to connect")
            if reply[0] != "ready":
                failures.append(f"worker {index}:\n{reply[1]}")
        start_ns = None if failures else time.monotonic_ns() + START_DELAY_NS
        for _process, conn in active:
            conn.send(("go", start_ns))
        deadline = plan.warmup_s + plan.duration_s + START_DELAY_NS / 1e9 + RESULT_GRACE
        merged = Measurement(plan, array("q"))
        if probe is not None and start_ns is not None:
            opens = start_ns + int(plan.warmup_s * 1e9)
            merged.probed = _probe_window(probe, opens, opens + int(plan.duration_s * 1e9))
        for index, (_process, conn) in enumerate(active):
            reply = _receive(conn, deadline, f"worker {index} to report")
            if reply[0] == "result":
                _kind, samples, errors, thread_failures = reply
                merged.latencies_ns.frombytes(samples)
                merged.errors.update(errors)
                failures.extend(f"worker {index}:\n{text}" for text in thread_failures)
        if failures:
            raise LoadError(
                f"{plan.scenario} at {plan.concurrency} clients:\n" + "\n".join(failures)
            )
        merged.latencies_ns = array("q", sorted(merged.latencies_ns))
        return merged


def _probe_window(probe: Probe, opens: int, closes: int) -> tuple[float, ...]:
    """The rise of probe's counters between two CLOCK_MONOTONIC instants (in ns)."""
    time.sleep(max(0.0, (opens - time.monotonic_ns()) / 1e9))
    before = probe()
    time.sleep(max(0.0, (closes - time.monotonic_ns()) / 1e9))
    after = probe()
    return tuple(b - a for a, b in zip(before, after, strict=True))


def _split(total: int, parts: int) -> list[int]:
    """total threads shared as evenly as possible between parts processes."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def _receive(conn: Connection, timeout: float, waiting_for: str) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise LoadError(f"timed out after {timeout:.0f}s waiting for {waiting_for}")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise LoadError(f"a worker exited while waiting for {waiting_for}") from None
    return message


def _worker_main(index: int, conn: Connection) -> None:
    """A worker process: take the fixture, then run cells until told to stop."""
    # Ctrl-C reaches the whole process group; the parent decides when workers end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fixture: scenarios.Fixture | None = None
    try:
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            if message[0] == "fixture":
                fixture = message[1]
            elif message[0] == "cell":
                assert fixture is not None
                if not _run_cell(conn, fixture, message[1], message[2]):
                    return
    except (EOFError, OSError):
        return  # the parent is gone or closed our pipe: nothing left to report to


@dataclass
class _Tally:
    """What one thread saw in the window."""

    samples: array[int] = field(default_factory=lambda: array("q"))
    errors: Counter[str] = field(default_factory=Counter)


def _run_cell(conn: Connection, fixture: scenarios.Fixture, plan: CellPlan, threads: int) -> bool:
    """This worker's share of one cell: connect, report ready, wait for the start, drive.

    False when the parent said "stop" instead of "go": the worker should end.
    """
    connected = threading.Barrier(threads + 1)
    released = threading.Barrier(threads + 1)
    window: list[int] = []
    tallies = [_Tally() for _ in range(threads)]
    failures: list[str] = []

    def client(tally: _Tally) -> None:
        with ExitStack() as stack:
            try:
                operation = stack.enter_context(scenarios.open_operation(plan.scenario, fixture))
            except Exception:
                failures.append(traceback.format_exc())
                connected.abort()
                return
            try:
                connected.wait()
                released.wait()
            except threading.BrokenBarrierError:
                return
            if window:
                _drive(operation, window[0], window[1], window[2], tally)

    workers = [threading.Thread(target=client, args=(tally,), daemon=True) for tally in tallies]
    for worker in workers:
        worker.start()
    try:
        connected.wait(READY_TIMEOUT)
        conn.send(("ready",))
    except threading.BrokenBarrierError:
        conn.send(("failed", "\n".join(failures) or "a client did not connect in time"))
    message = conn.recv()
    start = message[1] if message[0] == "go" else None
    if start is not None and not failures:
        # The start is on CLOCK_MONOTONIC; the loop reads perf_counter_ns, so shift it over.
        begin = time.perf_counter_ns() + (start - time.monotonic_ns())
        measure_from = begin + int(plan.warmup_s * 1e9)
        window.extend((begin, measure_from, measure_from + int(plan.duration_s * 1e9)))
    if window:
        released.wait()
    else:
        released.abort()
    for worker in workers:
        worker.join()
    samples, errors = array("q"), Counter[str]()
    for tally in tallies:
        samples.extend(tally.samples)
        errors.update(tally.errors)
    if message[0] != "go":
        return False
    conn.send(("result", samples.tobytes(), dict(errors), failures))
    return True


def _drive(
    operation: scenarios.Operation, begin: int, measure_from: int, until: int, tally: _Tally
) -> None:
    """Repeat operation from begin until the window closes, keeping what ended in it."""
    clock = time.perf_counter_ns
    pause = (begin - clock()) / 1e9
    if pause > 0:
        time.sleep(pause)
    samples, errors = tally.samples, tally.errors
    while True:
        started = clock()
        if started >= until:
            return
        failure: str | None = None
        try:
            operation()
        except grpc.RpcError as error:
            failure = error.code().name if isinstance(error, grpc.Call) else type(error).__name__
        except Exception as error:
            failure = type(error).__name__
        ended = clock()
        if measure_from <= ended <= until:
            if failure is None:
                samples.append(ended - started)
            else:
                errors[failure] += 1
