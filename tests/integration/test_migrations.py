"""The migrations are the schema: they match the table definitions, and they make the ledger
append-only at the database itself."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from creditline import CreditlineClient
from creditline.v1 import grant_pb2
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DatabaseError

from billing_service.db import migrate
from billing_service.db.engine import build_engine


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


@pytest.mark.postgres
def test_an_index_build_cut_off_is_rebuilt_by_the_next_migrate(pg_url: str) -> None:
    """0005 builds its index CONCURRENTLY; a build that failed leaves an INVALID index under
    its name, which the next `creditline migrate` must replace rather than keep."""
    name = f"creditline_mig_{uuid.uuid4().hex[:8]}"
    admin_url = pg_url.rpartition("/")[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = build_engine(pg_url.rpartition("/")[0] + f"/{name}", pool_size=1)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('0004')"))
            conn.execute(text(f"DROP INDEX {INDEX}"))
            conn.execute(
                text(
                    "INSERT INTO idempotency_records VALUES "
                    "('a', 'Op', 'f', '{}', 1), ('b', 'Op', 'f', '{}', 2)"
                )
            )
            conn.commit()
        with engine.connect() as pooled:
            conn = pooled.execution_options(isolation_level="AUTOCOMMIT")
            # A concurrent build that fails (a duplicate) leaves its index behind, INVALID.
            unique = f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON idempotency_records (operation)"
            with pytest.raises(DatabaseError):
                conn.execute(text(unique))
            assert index_state(conn) == [(False, True)]

        migrate.upgrade(engine)

        assert migrate.is_current(engine)
        with engine.connect() as conn:
            assert index_state(conn) == [(True, False)]  # valid, and not the unique one
        migrate.check(engine)
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


INDEX = "ix_idempotency_records_created_at"


def index_state(conn: Connection) -> list[tuple[bool, bool]]:
    rows = conn.execute(
        text("SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = to_regclass(:n)"),
        {"n": INDEX},
    )
    return [(bool(valid), bool(unique)) for valid, unique in rows]
