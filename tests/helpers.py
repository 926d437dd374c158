"""Small helpers the tests share: reading the tables directly, behind the service's back."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine, text

from billing_service.db.tables import metadata

# Every table of the schema: the PostgreSQL fixture empties them all between tests, and a
# refused call must leave every count as it was.
TABLES = ", ".join(table.name for table in metadata.sorted_tables)


def ledger_sum(engine: Engine, account_id: str) -> int:
    """The sum of an account's ledger entries, straight from the table."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account_id = :a"),
                {"a": account_id},
            ).scalar_one()
        )


def table_counts(engine: Engine) -> dict[str, int]:
    """Row counts of every table, to show that a refused call wrote nothing."""
    with engine.connect() as conn:
        return {
            t.strip(): int(conn.execute(text(f"SELECT COUNT(*) FROM {t.strip()}")).scalar_one())
            for t in TABLES.split(",")
        }


def waiting_for_locks(engine: Engine) -> int:
    """How many sessions of this PostgreSQL database wait for a lock right now."""
    # A new connection each time: pg_stat_activity is a snapshot per transaction.
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


@contextmanager
def accounts_pinned(engine: Engine, account_ids: Sequence[str], waiters: int) -> Iterator[None]:
    """On PostgreSQL, hold the accounts' row locks until `waiters` sessions queue behind them,
    so the calls made inside the block meet in the worst interleaving every time. On SQLite
    (one writer at a time) it does nothing."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as blocker, blocker.begin():
        for account_id in account_ids:
            blocker.execute(
                text("SELECT id FROM accounts WHERE id = :a FOR UPDATE"), {"a": account_id}
            )
        yield
        deadline = time.monotonic() + 30
        while waiting_for_locks(engine) < waiters:
            assert time.monotonic() < deadline, f"{waiters} calls never queued on the locks"
