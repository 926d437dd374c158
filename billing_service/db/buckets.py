"""Queries for grant buckets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, String, any_, bindparam, or_, select, tuple_

from billing_service.db.accounts import Sums, parse_sources
from billing_service.db.codec import (
    dump_map,
    from_micros,
    load_map,
    opt_from_micros,
    opt_to_micros,
    to_micros,
)
from billing_service.db.driver_sql import POSTGRESQL, driver_sql
from billing_service.db.tables import accounts, buckets
from billing_service.db.write_behind import Writes, keyed_update, table_insert
from billing_service.domain.model import Bucket, GrantSource, GrantStatus

# Must match the predicate of ix_buckets_live so both databases use that index.
_LIVE = or_(buckets.c.remaining > 0, buckets.c.status == GrantStatus.PENDING.value)


_LIVE_OF = select(buckets).where(buckets.c.account_id == bindparam("account_id"), _LIVE)
_LIVE_OF_MANY = select(buckets).where(
    buckets.c.account_id.in_(bindparam("account_ids", expanding=True)), _LIVE
)
# An account's sums, then its live buckets' columns (none when it has no live bucket).
_SUMS_THEN_BUCKETS = (
    accounts.c.balance.label("a_balance"),
    accounts.c.held.label("a_held"),
    accounts.c.sweep_due_at.label("a_sweep_due_at"),
    accounts.c.frozen_sources.label("a_frozen_sources"),
    *buckets.c,
)
_WITH_LIVE = accounts.outerjoin(buckets, (buckets.c.account_id == accounts.c.id) & _LIVE)
# An account's sums and live buckets in one statement (one snapshot, no transaction needed).
_SUMS_AND_LIVE = (
    select(*_SUMS_THEN_BUCKETS)
    .select_from(_WITH_LIVE)
    .where(accounts.c.id == bindparam("account_id"))
)
# The same for many accounts (PostgreSQL: an array of ids), each row led by its account id.
_SUMS_AND_LIVE_MANY = (
    select(accounts.c.id.label("a_id"), *_SUMS_THEN_BUCKETS)
    .select_from(_WITH_LIVE)
    .where(accounts.c.id == any_(bindparam("account_ids", type_=ARRAY(String))))
)
_BUCKET_COLUMNS = len(buckets.c)
_ADD = table_insert(buckets)
_SAVE_EXPIRY = keyed_update(buckets, ("id", "b_id"), {"expires_at": "b_expires_at"})
_SAVE = keyed_update(
    buckets,
    ("id", "b_id"),
    {"remaining": "b_remaining", "held": "b_held", "status": "b_status"},
)


class BucketRepository:
    """Reads and writes rows of the buckets table."""

    def __init__(self, connection: Connection, writes: Writes | None = None) -> None:
        self._conn = connection
        self._writes = writes or Writes(connection)

    def live(self, account_id: str) -> list[Bucket]:
        """The account's buckets that hold credits or are still to take effect."""
        rows = self._conn.execute(_LIVE_OF, {"account_id": account_id})
        return [_bucket(r._mapping) for r in rows]

    def live_many(self, account_ids: list[str]) -> dict[str, list[Bucket]]:
        """live() for several accounts in one statement, by account."""
        found: dict[str, list[Bucket]] = {account_id: [] for account_id in account_ids}
        for row in self._conn.execute(_LIVE_OF_MANY, {"account_ids": sorted(set(account_ids))}):
            bucket = _bucket(row._mapping)
            found[bucket.account_id].append(bucket)
        return found

    def sums_and_live(self, account_id: str) -> tuple[Sums, list[Bucket]] | None:
        """The account's cached sums and its live buckets, read by one statement; None when
        the account does not exist."""
        # The hottest read: run on the driver connection (the statement compiled once per
        # dialect), which skips SQLAlchemy's per-row result processing, about half its cost.
        driver: Any = self._conn.connection.driver_connection
        sql, params = driver_sql(self._conn.dialect, _SUMS_AND_LIVE)
        rows = driver.execute(sql, {**params, "account_id": account_id}).fetchall()
        if not rows:
            return None
        first = rows[0]
        sums = Sums(first[0], first[1], opt_from_micros(first[2]), parse_sources(first[3]))
        return sums, [_bucket_from_tuple(row, 4) for row in rows if row[4] is not None]

    def sums_and_live_many(self, account_ids: list[str]) -> dict[str, tuple[Sums, list[Bucket]]]:
        """sums_and_live for several accounts in one statement (PostgreSQL only), by account;
        accounts that do not exist are left out."""
        driver: Any = self._conn.connection.driver_connection
        sql, params = driver_sql(POSTGRESQL, _SUMS_AND_LIVE_MANY)
        rows = driver.execute(sql, {**params, "account_ids": sorted(set(account_ids))}).fetchall()
        found: dict[str, tuple[Sums, list[Bucket]]] = {}
        for row in rows:
            entry = found.get(row[0])
            if entry is None:
                sums = Sums(row[1], row[2], opt_from_micros(row[3]), parse_sources(row[4]))
                entry = found[row[0]] = (sums, [])
            if row[5] is not None:
                entry[1].append(_bucket_from_tuple(row, 5))
        return found

    def by_ids(self, ids: Iterable[str]) -> list[Bucket]:
        """The named buckets that exist."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        rows = self._conn.execute(select(buckets).where(buckets.c.id.in_(wanted)))
        return [_bucket(r._mapping) for r in rows]

    def get(self, grant_id: str) -> Bucket | None:
        """One bucket, or None."""
        row = self._conn.execute(select(buckets).where(buckets.c.id == grant_id)).first()
        return None if row is None else _bucket(row._mapping)

    def add(self, new: Sequence[Bucket]) -> None:
        """Insert new buckets."""
        if new:
            self._writes.execute(_ADD, [_row(b) for b in new])

    def save(self, changed: Sequence[Bucket]) -> None:
        """Write the mutable fields of changed buckets."""
        if not changed:
            return
        self._writes.execute(
            _SAVE,
            [
                {
                    "b_id": b.id,
                    "b_remaining": b.remaining,
                    "b_held": b.held,
                    "b_status": b.status.value,
                }
                for b in changed
            ],
        )

    def save_expiries(self, changed: Sequence[Bucket]) -> None:
        """Write the expiry of buckets whose expiry changed (rare: not on the hot path)."""
        if changed:
            self._writes.execute(
                _SAVE_EXPIRY,
                [{"b_id": b.id, "b_expires_at": opt_to_micros(b.expires_at)} for b in changed],
            )

    def page(
        self,
        account_id: str,
        *,
        before: tuple[int, str] | None,
        limit: int,
        statuses: Sequence[GrantStatus],
    ) -> list[Bucket]:
        """The account's buckets newest first, strictly older than the cursor."""
        query = select(buckets).where(buckets.c.account_id == account_id)
        if statuses:
            query = query.where(buckets.c.status.in_([s.value for s in statuses]))
        if before is not None:
            query = query.where(tuple_(buckets.c.created_at, buckets.c.id) < before)
        query = query.order_by(buckets.c.created_at.desc(), buckets.c.id.desc()).limit(limit)
        return [_bucket(r._mapping) for r in self._conn.execute(query)]


def cursor_of(bucket: Bucket) -> tuple[int, str]:
    """The keyset cursor that pages continue after."""
    return (to_micros(bucket.created_at), bucket.id)


def _row(b: Bucket) -> dict[str, Any]:
    return {
        "id": b.id,
        "account_id": b.account_id,
        "source": b.source.value,
        "amount": b.amount,
        "remaining": b.remaining,
        "held": b.held,
        "priority": b.priority,
        "effective_at": to_micros(b.effective_at),
        "expires_at": opt_to_micros(b.expires_at),
        "status": b.status.value,
        "description": b.description,
        "metadata": dump_map(b.metadata),
        "created_at": to_micros(b.created_at),
    }


def _bucket_from_tuple(row: Sequence[Any], at: int) -> Bucket:
    """A bucket from a driver row holding the buckets columns, in table order, from `at`."""
    (
        bucket_id,
        account_id,
        source,
        amount,
        remaining,
        held,
        priority,
        effective_at,
        expires_at,
        status,
        description,
        metadata,
        created_at,
    ) = row[at : at + _BUCKET_COLUMNS]
    return Bucket(
        id=bucket_id,
        account_id=account_id,
        source=GrantSource(source),
        amount=amount,
        remaining=remaining,
        held=held,
        priority=priority,
        effective_at=from_micros(effective_at),
        expires_at=opt_from_micros(expires_at),
        status=GrantStatus(status),
        description=description,
        metadata=load_map(metadata),
        created_at=from_micros(created_at),
    )


def bucket_from_row(m: Any) -> Bucket:
    """A Bucket from a mapping of a buckets row."""
    return _bucket(m)


def _bucket(m: Any) -> Bucket:
    return Bucket(
        id=m["id"],
        account_id=m["account_id"],
        source=GrantSource(m["source"]),
        amount=m["amount"],
        remaining=m["remaining"],
        held=m["held"],
        priority=m["priority"],
        effective_at=from_micros(m["effective_at"]),
        expires_at=opt_from_micros(m["expires_at"]),
        status=GrantStatus(m["status"]),
        description=m["description"],
        metadata=load_map(m["metadata"]),
        created_at=from_micros(m["created_at"]),
    )
