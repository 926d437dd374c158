"""Idempotency keys (DESIGN §4.3): a replay returns the first answer and moves nothing; the
same key for a different request is refused; a failed call records nothing."""

from __future__ import annotations

import pytest
from creditline import CreditlineClient
from creditline.errors import IdempotencyKeyReused, InsufficientCredits
from creditline.v1 import grant_pb2
from sqlalchemy import Engine

from billing_service.db.engine import build_engine
from billing_service.domain.clock import ManualClock
from billing_service.rpc.server import build_server
from billing_service.service_layer.context import AppContext, HoldPolicy
from billing_service.service_layer.unit_of_work import Database
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
