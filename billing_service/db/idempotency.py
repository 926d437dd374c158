"""Stored answers to mutating calls, keyed by the caller's idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, select

from billing_service.db.codec import to_micros
from billing_service.db.tables import idempotency_records
from billing_service.db.write_behind import Writes, table_insert


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an earlier call with this key was and what it answered."""

    operation: str
    fingerprint: str
    response: str


_GET = select(
    idempotency_records.c.operation,
    idempotency_records.c.fingerprint,
    idempotency_records.c.response,
).where(idempotency_records.c.key == bindparam("key"))
_ADD = table_insert(idempotency_records)


class IdempotencyRepository:
    """Reads and writes rows of the idempotency_records table."""

    def __init__(self, connection: Connection, writes: Writes | None = None) -> None:
        self._conn = connection
        self._writes = writes or Writes(connection)

    def get(self, key: str) -> IdempotencyRecord | None:
        """The record for key, or None."""
        row = self._conn.execute(_GET, {"key": key}).first()
        return None if row is None else IdempotencyRecord(row[0], row[1], row[2])

    def get_many(self, keys: list[str]) -> dict[str, IdempotencyRecord]:
        """The records that exist for any of keys."""
        rows = self._conn.execute(
            select(
                idempotency_records.c.key,
                idempotency_records.c.operation,
                idempotency_records.c.fingerprint,
                idempotency_records.c.response,
            ).where(idempotency_records.c.key.in_(sorted(set(keys))))
        )
        return {row[0]: IdempotencyRecord(row[1], row[2], row[3]) for row in rows}

    def add_many(self, records: list[tuple[str, IdempotencyRecord]], now: datetime) -> None:
        """Insert several records; a concurrent twin of any makes this raise IntegrityError."""
        if records:
            self._writes.execute(
                _ADD,
                [
                    {
                        "key": key,
                        "operation": record.operation,
                        "fingerprint": record.fingerprint,
                        "response": record.response,
                        "created_at": to_micros(now),
                    }
                    for key, record in records
                ],
            )

    def add(self, key: str, record: IdempotencyRecord, now: datetime) -> None:
        """Insert the record; a concurrent twin makes this raise IntegrityError."""
        self._conn.execute(
            _ADD,
            {
                "key": key,
                "operation": record.operation,
                "fingerprint": record.fingerprint,
                "response": record.response,
                "created_at": to_micros(now),
            },
        )

    def delete_older_than(self, cutoff: datetime, limit: int) -> int:
        """Delete up to limit records made before cutoff, oldest first; how many went."""
        oldest = (
            select(idempotency_records.c.key)
            .where(idempotency_records.c.created_at < to_micros(cutoff))
            .order_by(idempotency_records.c.created_at)
            .limit(limit)
            # Replicas' sweepers take different rows instead of queueing on the same ones.
            .with_for_update(skip_locked=True)
        )
        result = self._conn.execute(
            delete(idempotency_records).where(
                idempotency_records.c.key.in_(oldest.scalar_subquery())
            )
        )
        return int(result.rowcount)
