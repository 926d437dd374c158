"""Small helpers the tests share: reading the tables directly, behind the service's back."""

from __future__ import annotations

from sqlalchemy import Engine, text

TABLES = (
    "accounts, buckets, ledger_entries, reservations, idempotency_records, "
    "price_overrides, tiers, model_prices, price_books"
)


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
