"""Coalesced balance reads: concurrent GetBalance calls on PostgreSQL share one statement.

A GetBalance is one statement (an account's sums and live buckets). Run one per call, each
pays a pool checkout and a network round trip. Here calls coalesce (service_layer/coalescing):
one read is in flight per process, and it reads for every call queued behind it (up to
MAX_BATCH accounts) in one statement, while the calls that arrive meanwhile queue for the next.

Invariant: every answer comes from a statement that started after its call arrived, so a call
sees every write committed before it was made (as a read of its own would). SQLite, which has
no network to save, reads per call.
"""

from __future__ import annotations

import asyncio

from billing_service.db.accounts import Sums
from billing_service.domain.model import Bucket
from billing_service.service_layer.coalescing import Coalescer, PerTarget
from billing_service.service_layer.unit_of_work import Database

MAX_BATCH = 128

Found = tuple[Sums, list[Bucket]] | None


class BalanceReads:
    """Reads accounts' sums and live buckets, sharing statements between concurrent calls."""

    def __init__(self) -> None:
        self._coalescers: PerTarget[str, Found] = PerTarget(_make_coalescer)

    def sums_and_live(self, db: Database, account_id: str) -> Found:
        """The account's sums and live buckets, or None when it does not exist."""
        if db.engine.dialect.name != "postgresql":
            return db.read_statement(lambda tx: tx.buckets.sums_and_live(account_id))
        return self._coalescers.get(db).call(account_id)

    async def sums_and_live_async(self, db: Database, account_id: str) -> Found:
        """sums_and_live, for a coroutine: the read runs off the event loop."""
        if db.engine.dialect.name != "postgresql":
            return await asyncio.to_thread(self.sums_and_live, db, account_id)
        return await self._coalescers.get(db).call_async(account_id)

    def queued(self, db: Database) -> int:
        """Calls waiting behind the read in flight (for tests)."""
        coalescer = self._coalescers.existing(db)
        return 0 if coalescer is None else coalescer.queued()


def _make_coalescer(db: Database) -> Coalescer[str, Found]:
    def read(ids: list[str]) -> list[Found]:
        rows = db.read_statement(lambda tx: tx.buckets.sums_and_live_many(ids))
        return [rows.get(account_id) for account_id in ids]

    return Coalescer(read, max_batch=MAX_BATCH, name="balance-read")
