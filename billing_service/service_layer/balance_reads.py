"""Coalesced balance reads: concurrent GetBalance calls on PostgreSQL share one statement.

A GetBalance is one statement (an account's sums and live buckets). Run one per call, each
pays a pool checkout and a network round trip, and each return from the network has to win
the GIL back from every request thread. Here the first caller leads: it reads for itself and
for every call queued behind it (up to MAX_BATCH accounts) in one statement, while the calls
that arrive meanwhile queue for the next one. At most one read is in flight per process.

Invariant: every answer comes from a statement that started after its call arrived, so a call
sees every write committed before it was made (as a read of its own would). SQLite, which has
no network to save, reads per call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from billing_service.db.accounts import Sums
from billing_service.domain.model import Bucket
from billing_service.service_layer.unit_of_work import Database

MAX_BATCH = 128

Found = tuple[Sums, list[Bucket]] | None


@dataclass
class _Pending:
    account_id: str
    found: Found = None
    error: BaseException | None = None
    finished: bool = False
    promoted: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class BalanceReads:
    """Reads accounts' sums and live buckets, sharing statements between concurrent calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Pending] | None = None  # None: no read in flight

    def sums_and_live(self, db: Database, account_id: str) -> Found:
        """The account's sums and live buckets, or None when it does not exist."""
        if db.engine.dialect.name != "postgresql":
            return db.read_statement(lambda tx: tx.buckets.sums_and_live(account_id))
        pending = _Pending(account_id)
        with self._lock:
            lead = self._queue is None
            if self._queue is None:
                self._queue = []
            else:
                self._queue.append(pending)
        if lead:
            self._lead(db, [pending])
        while not pending.finished:
            pending.wake.wait()
            pending.wake.clear()
            if pending.promoted and not pending.finished:
                pending.promoted = False
                self._lead(db, None)
        if pending.error is not None:
            raise pending.error
        return pending.found

    def _lead(self, db: Database, batch: list[_Pending] | None) -> None:
        if batch is None:
            with self._lock:
                assert self._queue is not None
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
        try:
            ids = [p.account_id for p in batch]
            found = db.read_statement(lambda tx: tx.buckets.sums_and_live_many(ids))
            for pending in batch:
                pending.found = found.get(pending.account_id)
        except BaseException as error:  # every caller gets it: none was answered
            for pending in batch:
                pending.error = error
        for pending in batch:
            pending.finished = True
            pending.wake.set()
        with self._lock:
            assert self._queue is not None
            if self._queue:
                self._queue[0].promoted = True
                self._queue[0].wake.set()
            else:
                self._queue = None
