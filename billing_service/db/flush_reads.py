"""What a group-commit flush reads first: its accounts (locked, in id order), their live
buckets, the holds its commits and releases name, and the idempotency records of its keys.

The accounts are those named, and those of the named holds (a hold's account never changes).
On PostgreSQL the four statements go in one pipeline: one round trip. The server still runs
them one after another in the transaction, so the bucket, hold and key reads take their
snapshots after the locks are held and see everything the previous holder committed (READ
COMMITTED takes a snapshot per statement). On SQLite, which has no network to save, they are
the repositories' usual statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import ARRAY, Connection, String, any_, bindparam, func, or_, select

from billing_service.db.accounts import AccountRepository, LockedAccount, locked_account
from billing_service.db.buckets import BucketRepository, bucket_from_row
from billing_service.db.driver_sql import POSTGRESQL, driver_sql
from billing_service.db.idempotency import IdempotencyRecord, IdempotencyRepository
from billing_service.db.reservations import ReservationRepository, reservation_from_row
from billing_service.db.tables import accounts, buckets, idempotency_records, reservations
from billing_service.db.write_behind import driver_errors
from billing_service.domain.model import Bucket, GrantStatus, Reservation


@dataclass
class FlushReads:
    """The locked accounts that exist, their live buckets, and the keys' records."""

    locked: dict[str, LockedAccount]
    live: dict[str, list[Bucket]]
    holds: dict[str, Reservation]
    records: dict[str, IdempotencyRecord]


def _ids(name: str) -> Any:
    return any_(bindparam(name, type_=ARRAY(String)))


# The accounts named and those of the named holds, as one array: `id = ANY(array)` keeps
# to the primary key's index (an OR with a subquery would scan the table).
_OF_HOLDS = (
    select(func.array_agg(reservations.c.account_id))
    .where(reservations.c.id == _ids("holds"))
    .scalar_subquery()
)
_ACCOUNT_IDS = any_(func.array_cat(bindparam("ids", type_=ARRAY(String)), _OF_HOLDS))
_LOCK = (
    select(accounts).where(accounts.c.id == _ACCOUNT_IDS).order_by(accounts.c.id).with_for_update()
)
# The predicate must match ix_buckets_live's, as in BucketRepository.
_LIVE = select(buckets).where(
    buckets.c.account_id == _ACCOUNT_IDS,
    or_(buckets.c.remaining > 0, buckets.c.status == GrantStatus.PENDING.value),
)
_HOLDS = select(reservations).where(reservations.c.id == _ids("holds"))
_KEYS = select(
    idempotency_records.c.key,
    idempotency_records.c.operation,
    idempotency_records.c.fingerprint,
    idempotency_records.c.response,
).where(idempotency_records.c.key == _ids("keys"))


_PG_LOCK, _PG_LIVE = driver_sql(POSTGRESQL, _LOCK), driver_sql(POSTGRESQL, _LIVE)
_PG_HOLDS, _PG_KEYS = driver_sql(POSTGRESQL, _HOLDS), driver_sql(POSTGRESQL, _KEYS)


def lock_and_read(
    conn: Connection, account_ids: list[str], hold_ids: list[str], keys: list[str]
) -> FlushReads:
    """Lock the accounts that exist among account_ids and those of the holds (in id order),
    and read their live buckets, the holds and the keys' records."""
    ids = sorted(set(account_ids))
    holds = sorted(set(hold_ids))
    wanted = sorted(set(keys))
    if conn.dialect.name != "postgresql":
        owners = ReservationRepository(conn).accounts_of(holds) if holds else {}
        everyone = sorted({*ids, *owners.values()})
        locked = AccountRepository(conn).lock_many(everyone) if everyone else {}
        by_account = BucketRepository(conn).live_many(list(locked)) if locked else {}
        held = ReservationRepository(conn).get_many(holds) if holds else {}
        records = IdempotencyRepository(conn).get_many(wanted) if wanted else {}
        return FlushReads(locked, by_account, held, records)
    driver: Any = conn.connection.driver_connection
    with (
        driver_errors(conn),
        driver.pipeline(),
        driver.cursor(row_factory=dict_row) as lock,
        driver.cursor(row_factory=dict_row) as live_rows,
        driver.cursor(row_factory=dict_row) as hold_rows,
        driver.cursor() as key_rows,
    ):
        lock.execute(_PG_LOCK[0], {**_PG_LOCK[1], "ids": ids, "holds": holds})
        live_rows.execute(_PG_LIVE[0], {**_PG_LIVE[1], "ids": ids, "holds": holds})
        if holds:
            hold_rows.execute(_PG_HOLDS[0], {**_PG_HOLDS[1], "holds": holds})
        key_rows.execute(_PG_KEYS[0], {**_PG_KEYS[1], "keys": wanted})
        locked = {row["id"]: locked_account(row) for row in lock.fetchall()}
        live: dict[str, list[Bucket]] = {account_id: [] for account_id in locked}
        for row in live_rows.fetchall():
            live[row["account_id"]].append(bucket_from_row(row))
        held = {
            row["id"]: reservation_from_row(row) for row in (hold_rows.fetchall() if holds else ())
        }
        records = {r[0]: IdempotencyRecord(r[1], r[2], r[3]) for r in key_rows.fetchall()}
    return FlushReads(locked, live, held, records)
