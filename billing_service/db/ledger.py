"""Queries for the append-only ledger. There is deliberately no update or delete here; the
migration also installs triggers that refuse them at the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from billing_service.db import dataclass_json
from billing_service.db.codec import (
    dump_map,
    dump_movements,
    from_micros,
    load_map,
    load_movements,
    to_micros,
)
from billing_service.db.tables import ledger_entries
from billing_service.db.write_behind import Writes, table_insert
from billing_service.domain.model import EntryKind, LedgerEntry
from billing_service.domain.pricing import UsageLine

_APPEND = table_insert(ledger_entries)


class LedgerRepository:
    """Appends and reads ledger entries."""

    def __init__(self, connection: Connection, writes: Writes | None = None) -> None:
        self._conn = connection
        self._writes = writes or Writes(connection)

    def append(self, entries: Sequence[LedgerEntry]) -> None:
        """Append entries in the order given (their seq keeps that order)."""
        if entries:
            self._writes.execute(_APPEND, [_row(e) for e in entries])

    def get(self, entry_id: str) -> LedgerEntry | None:
        """One entry, or None."""
        row = self._conn.execute(
            select(ledger_entries).where(ledger_entries.c.id == entry_id)
        ).first()
        return None if row is None else _entry(row._mapping)

    def refunded_total(self, entry_id: str) -> int:
        """Credits already refunded against a spend entry."""
        total = self._conn.execute(
            select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
                ledger_entries.c.refunded_entry_id == entry_id
            )
        ).scalar_one()
        return int(total)

    def sum_for(self, account_id: str) -> int:
        """The sum of all of an account's entries: what its balance must equal."""
        total = self._conn.execute(
            select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
                ledger_entries.c.account_id == account_id
            )
        ).scalar_one()
        return int(total)

    def page(
        self,
        account_id: str,
        *,
        before_seq: int | None,
        limit: int,
        start: datetime | None,
        end: datetime | None,
        kinds: Sequence[EntryKind],
        feature: str,
    ) -> list[tuple[int, LedgerEntry]]:
        """(seq, entry) pairs newest first, strictly before the cursor, matching the filters."""
        query = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
        if before_seq is not None:
            query = query.where(ledger_entries.c.seq < before_seq)
        if start is not None:
            query = query.where(ledger_entries.c.created_at >= to_micros(start))
        if end is not None:
            query = query.where(ledger_entries.c.created_at < to_micros(end))
        if kinds:
            query = query.where(ledger_entries.c.kind.in_([k.value for k in kinds]))
        if feature:
            query = query.where(ledger_entries.c.feature == feature)
        rows = self._conn.execute(query.order_by(ledger_entries.c.seq.desc()).limit(limit))
        return [(r._mapping["seq"], _entry(r._mapping)) for r in rows]


def _row(e: LedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "account_id": e.account_id,
        "kind": e.kind.value,
        "amount": e.amount,
        "balance_after": e.balance_after,
        "buckets": dump_movements(e.buckets),
        "idempotency_key": e.idempotency_key,
        "feature": e.feature,
        "request_id": e.request_id,
        "reservation_id": e.reservation_id,
        "refunded_entry_id": e.refunded_entry_id,
        "metadata": dump_map(e.metadata),
        "created_at": to_micros(e.created_at),
        "pricing": (
            dataclass_json.dumps(EntryPricing(e.price_book_version, e.usage))
            if e.price_book_version
            else None
        ),
    }


@dataclass(frozen=True)
class EntryPricing:
    """The pricing column of a ledger entry priced from usage."""

    version: int
    usage: tuple[UsageLine, ...]


def _entry(m: Any) -> LedgerEntry:
    pricing = (
        dataclass_json.loads(EntryPricing, m["pricing"]) if m["pricing"] else EntryPricing(0, ())
    )
    return LedgerEntry(
        id=m["id"],
        account_id=m["account_id"],
        kind=EntryKind(m["kind"]),
        amount=m["amount"],
        balance_after=m["balance_after"],
        buckets=load_movements(m["buckets"]),
        idempotency_key=m["idempotency_key"],
        feature=m["feature"],
        request_id=m["request_id"],
        reservation_id=m["reservation_id"],
        refunded_entry_id=m["refunded_entry_id"],
        metadata=load_map(m["metadata"]),
        created_at=from_micros(m["created_at"]),
        price_book_version=pricing.version,
        usage=pricing.usage,
    )
