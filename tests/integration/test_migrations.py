"""The migrations are the schema: they match the table definitions, and they make the ledger
append-only at the database itself."""

from __future__ import annotations

import pytest
from creditline import CreditlineClient
from creditline.v1 import grant_pb2
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError

from billing_service.db import migrate


def test_models_and_migrations_do_not_drift(engine: Engine) -> None:
    migrate.check(engine)
    assert migrate.is_current(engine)


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger_entries SET amount = amount * 2", "DELETE FROM ledger_entries"],
)
def test_ledger_rows_cannot_be_rewritten(
    client: CreditlineClient, engine: Engine, statement: str
) -> None:
    client.create_account("acct")
    client.grant_credits("acct", "5", source=grant_pb2.GRANT_SOURCE_PURCHASE)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT amount FROM ledger_entries")).scalars().all() == [
            5_000_000
        ]
