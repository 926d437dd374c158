"""Group commit for the hot writes (SpendCredits, ReserveCredits, CommitReservation,
ReleaseReservation): concurrent calls share one transaction, on one account or on many.

Calls are spread over lanes by a hash of their account id (of the hold id for commits and
releases, whose account is not known until the flush reads it); a lane has at most one flush
in flight. With one lane (the default) an account has at most one flush in flight; with more,
a spend and a commit on one account may flush at once in two lanes, and the account's row
lock makes the second wait. Calls that arrive while a lane flushes queue behind it
(service_layer/coalescing), and the next flush takes up to MAX_BATCH of them into one
transaction: it is led by the first queued call's thread or, for the server's coroutine
handlers, run on the committer's own thread for the lane. A flush is one lock statement for
all their accounts (in id order, so flushes of different lanes or processes cannot
deadlock), one read of the idempotency keys, one of the buckets, batched writes and one
COMMIT. On PostgreSQL that is two round trips: the lock and the reads go in one pipeline
(db/flush_reads), every write and the COMMIT in another (db/write_behind). One lane (the
default) makes the biggest batches, which measured fastest; more lanes let one flush's Python
work overlap another's wait for the database, for bigger machines.

Invariants (each is a test in tests/integration):
- Every call in a batch gets the outcome it would get if the batch's calls ran one after
  another in arrival order: each works on the book left by those before it, and a refused call
  changes nothing (every `apply` refuses before it moves anything).
- Idempotency as for single calls: the keys' records are read after the account locks are
  held, so a twin committed by another process while this one waited is seen and replayed; a
  key repeated inside the batch replays the first (or is refused when the request differs);
  the new records are written in the same transaction as the effects.
- If the batch's transaction fails as a whole, each call is run again on its own, so one bad
  call cannot take the others down with it.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from billing_service.db import dataclass_json as codec
from billing_service.db.flush_reads import FlushReads, lock_and_read
from billing_service.db.idempotency import IdempotencyRecord
from billing_service.domain.clock import Clock
from billing_service.domain.errors import (
    DomainError,
    IdempotencyKeyReused,
    NotFound,
    Unavailable,
)
from billing_service.service_layer.books import OpenBook, open_books, save_books
from billing_service.service_layer.coalescing import Coalescer, PerTarget
from billing_service.service_layer.idempotency import Outcome
from billing_service.service_layer.unit_of_work import Database, Tx

MAX_BATCH = 64
DEFAULT_LANES = 1

R = TypeVar("R")


@dataclass(slots=True)
class PendingWrite(Generic[R]):
    """One write, ready to queue.

    The call names its account, or a hold whose account the flush looks up. apply does the
    call's work on the account's open book; it must refuse (raise a DomainError) before it
    changes anything. alone runs the call in its own transaction.
    """

    operation: str
    account_id: str
    reservation_id: str
    key: str
    fingerprint: str
    result_type: type[R]
    apply: Callable[[Tx, OpenBook, datetime], R]
    alone: Callable[[], Outcome[R]]


class GroupCommitter:
    """Lanes of queued writes (service_layer/coalescing), each flushed one batch at a time.

    A thread that submits leads a flush itself when its write's turn comes; a coroutine's
    write is flushed by a thread of the committer's own, one per lane.
    """

    def __init__(self, lanes: int = DEFAULT_LANES) -> None:
        self._lanes = lanes
        # One coalescer per database and clock: in production there is one of each.
        self._coalescers: PerTarget[PendingWrite[Any], Outcome[Any]] = PerTarget(
            self._make_coalescer
        )

    def submit(self, db: Database, clock: Clock, pending: PendingWrite[R]) -> Outcome[R]:
        """Queue a write, lead flushes when it is this write's turn, and return its outcome."""
        outcome: Outcome[R] = self._coalescer(db, clock).call(pending, self._lane(pending))
        return outcome

    async def submit_async(
        self, db: Database, clock: Clock, pending: PendingWrite[R]
    ) -> Outcome[R]:
        """submit, for a coroutine: the write is flushed on the committer's threads."""
        coalescer = self._coalescer(db, clock)
        outcome: Outcome[R] = await coalescer.call_async(pending, self._lane(pending))
        return outcome

    def _lane(self, pending: PendingWrite[Any]) -> int:
        return zlib.crc32((pending.account_id or pending.reservation_id).encode()) % self._lanes

    def _coalescer(self, db: Database, clock: Clock) -> Coalescer[PendingWrite[Any], Outcome[Any]]:
        return self._coalescers.get(db, clock)

    def _make_coalescer(
        self, db: Database, clock: Clock
    ) -> Coalescer[PendingWrite[Any], Outcome[Any]]:
        return Coalescer(
            functools.partial(_flush, db, clock),
            max_batch=MAX_BATCH,
            lanes=self._lanes,
            name="flush",
        )


def _flush(
    db: Database, clock: Clock, batch: list[PendingWrite[Any]]
) -> list[Outcome[Any] | BaseException]:
    """Each write's outcome or error: in one transaction, or alone when that one fails."""
    results: list[Outcome[Any] | DomainError | None]
    try:
        results = list(db.write(lambda tx: apply_batch(tx, clock, batch)))
    except Unavailable as error:
        # The database cannot be reached: retrying each call alone would only wait for it
        # once per call while everything queued behind waits too. All get the error (they
        # changed nothing) and retry with their keys.
        return [error] * len(batch)
    except BaseException:  # something one call did: every call is retried alone, below
        results = [None] * len(batch)
    finished: list[Outcome[Any] | BaseException] = []
    for pending, result in zip(batch, results, strict=True):
        if result is None:
            try:
                finished.append(pending.alone())
            except BaseException as error:
                finished.append(error)
        else:
            finished.append(result)
    return finished


def apply_batch(
    tx: Tx, clock: Clock, batch: list[PendingWrite[Any]]
) -> list[Outcome[Any] | DomainError]:
    """Run a batch of writes in one transaction; each one's outcome or refusal, in order."""
    now = clock.now()
    # The holds and keys are read under the account locks: a twin committed while this
    # transaction waited is visible, and so is whatever happened to the holds meanwhile.
    read = lock_and_read(
        tx.connection,
        [p.account_id for p in batch if p.account_id],
        [p.reservation_id for p in batch if not p.account_id],
        [p.key for p in batch],
    )
    tx.reservations.remember(read.holds.values())
    account_of = {id(p): p.account_id or _owner(read, p.reservation_id) for p in batch}
    books = open_books(tx, read, now)
    with tx.writes.holding():
        results, new_records = _apply_all(
            tx, batch, account_of=account_of, books=books, records=read.records, now=now
        )
        save_books(tx, list(books.values()))
        tx.idempotency.add_many(new_records, now)
        # Every write and the COMMIT in one round trip on PostgreSQL.
        tx.writes.send(commit=True)
    return results


def _owner(read: FlushReads, reservation_id: str) -> str:
    hold = read.holds.get(reservation_id)
    return hold.account_id if hold is not None else ""


def _apply_all(
    tx: Tx,
    batch: list[PendingWrite[Any]],
    *,
    account_of: dict[int, str],
    books: dict[str, OpenBook],
    records: dict[str, IdempotencyRecord],
    now: datetime,
) -> tuple[list[Outcome[Any] | DomainError], list[tuple[str, IdempotencyRecord]]]:
    """Each call's outcome or refusal, in order, and the new idempotency records."""
    results: list[Outcome[Any] | DomainError] = []
    fresh: dict[str, tuple[str, str, Any]] = {}
    new_records: list[tuple[str, IdempotencyRecord]] = []
    for pending in batch:
        record = records.get(pending.key)
        if record is not None:
            if record.operation != pending.operation or record.fingerprint != pending.fingerprint:
                results.append(IdempotencyKeyReused(pending.operation))
            else:
                replay = codec.loads(pending.result_type, record.response)
                results.append(Outcome(replay, replayed=True))
            continue
        if pending.key in fresh:
            operation, digest, earlier = fresh[pending.key]
            same = (operation, digest) == (pending.operation, pending.fingerprint)
            results.append(
                Outcome(earlier, replayed=True) if same else IdempotencyKeyReused(pending.operation)
            )
            continue
        account_id = account_of[id(pending)]
        opened = books.get(account_id)
        if opened is None:
            missing = (
                NotFound("RESERVATION", "reservation_id", pending.reservation_id)
                if not pending.account_id
                else NotFound("ACCOUNT", "account_id", pending.account_id)
            )
            results.append(missing)
            continue
        try:
            result = pending.apply(tx, opened, now)
        except DomainError as error:
            results.append(error)
            continue
        fresh[pending.key] = (pending.operation, pending.fingerprint, result)
        record = IdempotencyRecord(pending.operation, pending.fingerprint, codec.dumps(result))
        new_records.append((pending.key, record))
        results.append(Outcome(result, replayed=False))
    return results, new_records
