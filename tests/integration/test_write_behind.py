"""Writes held back to the end of a flush (db/write_behind.py) and the flush's first reads
(db/flush_reads.py), on both databases: the transaction reads what it wrote, writes keep their
order, a failing transaction leaves nothing, and driver errors come out as SQLAlchemy's, so the
retry and Unavailable handling of Database.write still applies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from billing_service.db.flush_reads import lock_and_read
from billing_service.db.idempotency import IdempotencyRecord
from billing_service.db.tables import idempotency_records
from billing_service.domain.errors import Unavailable
from billing_service.service_layer import credits
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.unit_of_work import Database, Tx
from tests.integration.test_group_commit import c, open_account

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(n: int) -> tuple[str, IdempotencyRecord]:
    return f"key-{n}", IdempotencyRecord("SpendCredits", f"fp-{n}", "{}")


def stored_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(idempotency_records.c.key)).scalars())


def test_held_writes_are_sent_in_order_with_the_commit(engine: Engine) -> None:
    def work(tx: Tx) -> None:
        with tx.writes.holding():
            tx.idempotency.add_many([record(1), record(2)], NOW)
            tx.idempotency.add(*record(3), NOW)
            tx.writes.send(commit=True)

    Database(engine).write(work)
    assert sorted(stored_keys(engine)) == ["key-1", "key-2", "key-3"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_commit_goes_with_the_writes_on_postgresql(engine: Engine) -> None:
    """send(commit=True) commits in its own pipeline: another connection sees the writes
    before the transaction's block ends (SQLAlchemy's commit then finds nothing to do)."""
    seen: list[list[str]] = []

    def work(tx: Tx) -> None:
        with tx.writes.holding():
            tx.idempotency.add_many([record(1), record(2)], NOW)
            tx.writes.send(commit=True)
        seen.append(sorted(stored_keys(engine)))

    Database(engine).write(work)
    assert seen == [["key-1", "key-2"]]


def test_a_read_while_writes_are_held_sees_them(engine: Engine) -> None:
    def work(tx: Tx) -> list[str]:
        with tx.writes.holding():
            tx.idempotency.add_many([record(1)], NOW)
            seen = sorted(tx.idempotency.get_many(["key-1", "key-2"]))
            tx.writes.send(commit=True)
        return seen

    assert Database(engine).write(work) == ["key-1"]


def test_a_failing_transaction_leaves_none_of_its_held_writes(engine: Engine) -> None:
    def work(tx: Tx) -> None:
        with tx.writes.holding():
            tx.idempotency.add_many([record(1)], NOW)
            raise RuntimeError("the flush failed before sending")

    with pytest.raises(RuntimeError):
        Database(engine).write(work)
    assert stored_keys(engine) == []


def test_a_duplicate_key_in_held_writes_is_an_integrity_error(engine: Engine) -> None:
    Database(engine).write(lambda tx: tx.idempotency.add(*record(1), NOW))

    def work(tx: Tx) -> None:
        with tx.writes.holding():
            tx.idempotency.add_many([record(2), record(1)], NOW)
            tx.writes.send(commit=True)

    # Database.write retries a unique-key race, as for any statement; this one never passes.
    with pytest.raises(IntegrityError):
        Database(engine).write(work)
    assert stored_keys(engine) == ["key-1"]  # nothing of the failed batch stayed


def test_flush_reads_lock_existing_accounts_and_those_of_holds_and_read_the_rest(
    ctx: AppContext, engine: Engine
) -> None:
    open_account(ctx, "acct-a", "5")
    open_account(ctx, "acct-b", "7")
    open_account(ctx, "acct-c", "9")
    hold = credits.reserve_credits(
        ctx,
        account_id="acct-c",
        amount=c("2"),
        ttl=None,
        feature="",
        request_id="",
        metadata={},
        idempotency_key="hold-c",
    ).result.reservation
    Database(engine).write(lambda tx: tx.idempotency.add(*record(1), NOW))
    with engine.begin() as conn:
        read = lock_and_read(
            conn,
            ["acct-b", "missing", "acct-a", "acct-b"],
            [hold.id, "rsv_missing"],
            ["key-1", "key-9"],
        )
    assert sorted(read.locked) == ["acct-a", "acct-b", "acct-c"]
    assert {a: sum(b.remaining for b in bs) for a, bs in read.live.items()} == {
        "acct-a": c("5"),
        "acct-b": c("7"),
        "acct-c": c("9"),
    }
    assert list(read.holds) == [hold.id]
    assert read.holds[hold.id].amount == c("2")
    assert sorted(read.records) == ["key-1"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_lost_while_sending_is_unavailable(engine: Engine) -> None:
    def work(tx: Tx) -> None:
        pid = tx.connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with tx.writes.holding():
            tx.idempotency.add_many([record(1)], NOW)
            tx.writes.send(commit=True)

    with pytest.raises(Unavailable):
        Database(engine).write(work)
    assert stored_keys(engine) == []
    # The pool threw the dead connection away: the next transaction works.
    Database(engine).write(lambda tx: tx.idempotency.add(*record(2), NOW))
    assert stored_keys(engine) == ["key-2"]


def test_held_updates_apply_per_row_and_a_row_given_twice_keeps_the_last(
    ctx: AppContext, engine: Engine
) -> None:
    for name in ("acct-a", "acct-b", "acct-c"):
        open_account(ctx, name, "1")

    def work(tx: Tx) -> None:
        with tx.writes.holding():
            # Distinct keys: one statement over arrays on PostgreSQL; 64-bit integers must
            # arrive exactly.
            tx.accounts.save_sums_many(
                [("acct-a", 2**62 + 1, 2**62 - 1, None), ("acct-b", 22, 2, NOW)]
            )
            tx.writes.send()
            # acct-c twice in one group: must not collapse into one arbitrary update.
            tx.accounts.save_sums_many(
                [("acct-c", 31, 0, None), ("acct-b", 23, 2, NOW), ("acct-c", 33, 3, None)]
            )
            tx.writes.send(commit=True)

    Database(engine).write(work)
    with engine.connect() as conn:
        sums = {
            row.id: (row.balance, row.held, row.sweep_due_at)
            for row in conn.execute(text("SELECT id, balance, held, sweep_due_at FROM accounts"))
        }
    assert sums == {
        "acct-a": (2**62 + 1, 2**62 - 1, None),
        "acct-b": (23, 2, 1_767_225_600_000_000),
        "acct-c": (33, 3, None),
    }


def test_held_inserts_keep_their_order_and_text_as_given(engine: Engine) -> None:
    odd = ['quote " comma , brace { } backslash \\', "", "ünïcödé"]
    rows = [(f"key-{n}", IdempotencyRecord("SpendCredits", f"fp-{n}", odd[n])) for n in range(3)]

    def work(tx: Tx) -> None:
        with tx.writes.holding():
            tx.idempotency.add_many(rows, NOW)
            tx.writes.send(commit=True)

    Database(engine).write(work)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT key, response FROM idempotency_records")).all())
    assert stored == {key: record.response for key, record in rows}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_postgresql_connection_plans_each_execution_for_its_arguments(
    engine: Engine,
) -> None:
    """A generic plan made while a table was small kept scanning it whole once it had grown;
    every connection of the pool plans each execution instead."""
    with engine.connect() as first, engine.connect() as second:
        modes = {c.execute(text("SHOW plan_cache_mode")).scalar_one() for c in (first, second)}
    assert modes == {"force_custom_plan"}
