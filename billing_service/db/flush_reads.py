"""What a group-commit flush reads first: its accounts (locked, in id order), their live
buckets and the idempotency records of its keys.

On PostgreSQL the three statements go in one pipeline: one round trip instead of three. The
server still runs them one after another in the transaction, so the bucket and key reads
take their snapshots after the locks are held and see everything the previous holder
committed (READ COMMITTED takes a snapshot per statement). On SQLite, which has no network
to save, they are the repositories' usual statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import ARRAY, Connection, String, any_, bindparam, or_, select
from sqlalchemy.dialects import postgresql

from billing_service.db.accounts import AccountRepository, LockedAccount, locked_account
from billing_service.db.buckets import BucketRepository, bucket_from_row
from billing_service.db.idempotency import IdempotencyRecord, IdempotencyRepository
from billing_service.db.tables import accounts, buckets, idempotency_records
from billing_service.db.write_behind import driver_errors
from billing_service.domain.model import Bucket, GrantStatus


@dataclass
class FlushReads:
    """The locked accounts that exist, their live buckets, and the keys' records."""

    locked: dict[str, LockedAccount]
    live: dict[str, list[Bucket]]
    records: dict[str, IdempotencyRecord]


def _ids(name: str) -> Any:
    return any_(bindparam(name, type_=ARRAY(String)))


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_LOCK = (
    select(accounts).where(accounts.c.id == _ids("ids")).order_by(accounts.c.id).with_for_update()
)
# The predicate must match ix_buckets_live's, as in BucketRepository.
_LIVE = select(buckets).where(
    buckets.c.account_id == _ids("ids"),
    or_(buckets.c.remaining > 0, buckets.c.status == GrantStatus.PENDING.value),
)
_KEYS = select(
    idempotency_records.c.key,
    idempotency_records.c.operation,
    idempotency_records.c.fingerprint,
    idempotency_records.c.response,
).where(idempotency_records.c.key == _ids("keys"))


def _compiled(statement: Any) -> tuple[str, dict[str, Any]]:
    compiled = statement.compile(dialect=_PG)
    return str(compiled), dict(compiled.params)


_PG_LOCK, _PG_LIVE, _PG_KEYS = _compiled(_LOCK), _compiled(_LIVE), _compiled(_KEYS)


def lock_and_read(conn: Connection, account_ids: list[str], keys: list[str]) -> FlushReads:
    """Lock the accounts among account_ids that exist (in id order) and read the rest."""
    ids = sorted(set(account_ids))
    wanted = sorted(set(keys))
    if conn.dialect.name != "postgresql":
        locked = AccountRepository(conn).lock_many(ids) if ids else {}
        by_account = BucketRepository(conn).live_many(list(locked)) if locked else {}
        records = IdempotencyRepository(conn).get_many(wanted) if wanted else {}
        return FlushReads(locked, by_account, records)
    driver: Any = conn.connection.driver_connection
    with (
        driver_errors(conn),
        driver.pipeline(),
        driver.cursor(row_factory=dict_row) as lock,
        driver.cursor(row_factory=dict_row) as live_rows,
        driver.cursor() as key_rows,
    ):
        lock.execute(_PG_LOCK[0], {**_PG_LOCK[1], "ids": ids})
        live_rows.execute(_PG_LIVE[0], {**_PG_LIVE[1], "ids": ids})
        key_rows.execute(_PG_KEYS[0], {**_PG_KEYS[1], "keys": wanted})
        locked = {row["id"]: locked_account(row) for row in lock.fetchall()}
        live: dict[str, list[Bucket]] = {account_id: [] for account_id in locked}
        for row in live_rows.fetchall():
            live[row["account_id"]].append(bucket_from_row(row))
        records = {r[0]: IdempotencyRecord(r[1], r[2], r[3]) for r in key_rows.fetchall()}
    return FlushReads(locked, live, records)
