"""Idempotency keys (DESIGN §4.3): a replay returns the first answer and moves nothing; the
same key for a different request is refused; a failed call records nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from creditline import CreditlineClient
from creditline.errors import IdempotencyKeyReused, InsufficientCredits
from creditline.v1 import grant_pb2
from sqlalchemy import Engine, text

from billing_service.db.engine import build_engine
from billing_service.domain.clock import ManualClock
from billing_service.jobs import sweeper as sweeper_module
from billing_service.jobs.sweeper import Sweeper
from billing_service.rpc.server import build_server
from billing_service.service_layer.context import AppContext, HoldPolicy
from billing_service.service_layer.sweeping import prune_idempotency_records
from billing_service.service_layer.unit_of_work import Database
from billing_service.settings import Settings
from tests.helpers import ledger_sum, table_counts


@pytest.fixture
def funded(client: CreditlineClient) -> str:
    client.create_account("acct", idempotency_key="create-acct")
    client.grant_credits("acct", "10", source=grant_pb2.GRANT_SOURCE_PURCHASE)
    return "acct"


def test_replayed_spend_returns_the_first_answer(
    client: CreditlineClient, funded: str, engine: Engine
) -> None:
    first = client.spend_credits(funded, "3", feature="chat", idempotency_key="spend-1")
    client.spend_credits(funded, "1")
    again = client.spend_credits(funded, "3", feature="chat", idempotency_key="spend-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.ledger_entry == first.ledger_entry
    assert again.available == first.available == "7"
    assert client.get_balance(funded).balance.balance == "6"
    assert ledger_sum(engine, funded) == 6_000_000


def test_same_key_different_request_is_refused(
    client: CreditlineClient, funded: str, engine: Engine
) -> None:
    client.spend_credits(funded, "3", idempotency_key="spend-1")
    before = table_counts(engine)
    with pytest.raises(IdempotencyKeyReused) as caught:
        client.spend_credits(funded, "4", idempotency_key="spend-1")
    assert caught.value.field == "idempotency_key"
    with pytest.raises(IdempotencyKeyReused):
        client.reserve_credits(funded, "3", idempotency_key="spend-1")
    assert table_counts(engine) == before


def test_failed_call_records_nothing_so_its_retry_runs(
    client: CreditlineClient, funded: str
) -> None:
    with pytest.raises(InsufficientCredits):
        client.spend_credits(funded, "11", idempotency_key="big")
    client.grant_credits(funded, "5", source=grant_pb2.GRANT_SOURCE_PURCHASE)
    done = client.spend_credits(funded, "11", idempotency_key="big")
    assert (done.replayed, done.available) == (False, "4")


def test_every_mutation_replays(client: CreditlineClient, funded: str, engine: Engine) -> None:
    created = client.create_account("acct", idempotency_key="create-acct")
    assert created.replayed
    grant = client.grant_credits(
        funded, "2", source=grant_pb2.GRANT_SOURCE_PROMOTIONAL, idempotency_key="g"
    )
    hold = client.reserve_credits(funded, "4", idempotency_key="r")
    commit = client.commit_reservation(hold.reservation.reservation_id, "1", idempotency_key="c")
    spend = client.spend_credits(funded, "1", idempotency_key="s")
    refund = client.refund_spend(spend.ledger_entry.entry_id, idempotency_key="f")
    void = client.void_grant(grant.grant.grant_id, idempotency_key="v")
    other = client.reserve_credits(funded, "1", idempotency_key="r2")
    release = client.release_reservation(other.reservation.reservation_id, idempotency_key="l")
    update = client.update_account(funded, stripe_customer_id="cus_1", idempotency_key="u")
    before = table_counts(engine), client.get_balance(funded).balance.balance
    replays = [
        client.grant_credits(
            funded, "2", source=grant_pb2.GRANT_SOURCE_PROMOTIONAL, idempotency_key="g"
        ),
        client.reserve_credits(funded, "4", idempotency_key="r"),
        client.commit_reservation(hold.reservation.reservation_id, "1", idempotency_key="c"),
        client.spend_credits(funded, "1", idempotency_key="s"),
        client.refund_spend(spend.ledger_entry.entry_id, idempotency_key="f"),
        client.void_grant(grant.grant.grant_id, idempotency_key="v"),
        client.release_reservation(other.reservation.reservation_id, idempotency_key="l"),
        client.update_account(funded, stripe_customer_id="cus_1", idempotency_key="u"),
    ]
    firsts = [grant, hold, commit, spend, refund, void, release, update]
    for first, replay in zip(firsts, replays, strict=True):
        assert replay.replayed and not first.replayed
        first.replayed = True
        assert replay == first
    assert (table_counts(engine), client.get_balance(funded).balance.balance) == before


def test_replay_survives_a_restart(
    client: CreditlineClient, funded: str, database_url: str
) -> None:
    first = client.spend_credits(funded, "3", idempotency_key="across-restart")
    engine = build_engine(database_url, pool_size=2)
    other = build_server(
        AppContext(Database(engine), ManualClock(), HoldPolicy()),
        listen="127.0.0.1:0",
        tokens={},
    )
    try:
        with CreditlineClient(f"127.0.0.1:{other.port}") as second_replica:
            again = second_replica.spend_credits(funded, "3", idempotency_key="across-restart")
    finally:
        other.stop(0)
        engine.dispose()
    assert again.replayed
    assert again.ledger_entry == first.ledger_entry


# -- retention -------------------------------------------------------------------------------


def record_keys(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT key FROM idempotency_records")).scalars())


def test_records_past_their_retention_are_deleted_and_their_keys_run_anew(
    client: CreditlineClient, ctx: AppContext, clock: ManualClock, engine: Engine
) -> None:
    client.create_account("acct", idempotency_key="create-acct")
    client.grant_credits("acct", "10", source=grant_pb2.GRANT_SOURCE_PURCHASE, idempotency_key="g")
    client.spend_credits("acct", "1", idempotency_key="spend-old")
    clock.advance(timedelta(days=29))
    client.spend_credits("acct", "1", idempotency_key="spend-new")
    clock.advance(timedelta(days=2))  # the first three are 31 days old, the last 2
    sweeper = Sweeper(ctx, interval=60, batch=10, retention=timedelta(days=30))

    done = sweeper.run_once()

    assert (done.pruned, done.more) == (3, False)
    assert record_keys(engine) == {"spend-new"}
    assert client.spend_credits("acct", "1", idempotency_key="spend-new").replayed
    # A key past its retention is a new key: the retry is applied again, as documented.
    late = client.spend_credits("acct", "1", idempotency_key="spend-old")
    assert (late.replayed, late.available) == (False, "7")
    assert sweeper.run_once().pruned == 0


def test_records_go_oldest_first_in_batches_and_a_full_batch_asks_for_more(
    client: CreditlineClient,
    ctx: AppContext,
    clock: ManualClock,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client.create_account("acct", idempotency_key="k0")
    for n in range(1, 5):
        clock.advance(timedelta(minutes=1))
        client.grant_credits(
            "acct", "1", source=grant_pb2.GRANT_SOURCE_PURCHASE, idempotency_key=f"k{n}"
        )
    clock.advance(timedelta(days=1))
    monkeypatch.setattr(sweeper_module, "PRUNE_BATCH", 2)
    sweeper = Sweeper(ctx, interval=60, batch=10, retention=timedelta(hours=1))

    first = sweeper.run_once()
    assert (first.pruned, first.more) == (2, True)
    assert record_keys(engine) == {"k2", "k3", "k4"}
    assert [sweeper.run_once().pruned for _ in range(3)] == [2, 1, 0]
    assert record_keys(engine) == set()


def test_without_a_retention_records_are_kept(
    client: CreditlineClient, ctx: AppContext, clock: ManualClock, engine: Engine
) -> None:
    client.create_account("acct", idempotency_key="create-acct")
    clock.advance(timedelta(days=3650))
    assert Sweeper(ctx, interval=60, batch=10, retention=None).run_once().pruned == 0
    assert record_keys(engine) == {"create-acct"}


@pytest.mark.parametrize(("days", "kept"), [("0", None), ("7", timedelta(days=7))])
def test_the_retention_setting(
    monkeypatch: pytest.MonkeyPatch, days: str, kept: timedelta | None
) -> None:
    monkeypatch.delenv("CREDITLINE_IDEMPOTENCY_RETENTION_DAYS", raising=False)
    assert Settings().idempotency_retention == timedelta(days=30)  # the default
    monkeypatch.setenv("CREDITLINE_IDEMPOTENCY_RETENTION_DAYS", days)
    assert Settings().idempotency_retention == kept


def test_sweepers_pruning_at_once_delete_each_record_once(
    ctx: AppContext, clock: ManualClock, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO idempotency_records VALUES (:k, 'Op', 'f', '{}', :t)"),
            [{"k": f"key-{n}", "t": n} for n in range(300)],
        )
    start = threading.Barrier(4)

    def prune_until_none() -> int:
        start.wait()
        total = 0
        while deleted := prune_idempotency_records(ctx, retention=timedelta(days=1), batch=25):
            total += deleted
        return total

    with ThreadPoolExecutor(4) as pool:
        totals = list(pool.map(lambda _: prune_until_none(), range(4)))

    assert sum(totals) == 300 and record_keys(engine) == set()
