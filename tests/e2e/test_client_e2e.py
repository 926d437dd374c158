"""The Python client against a real `creditline serve` process, on SQLite and on PostgreSQL.

The same flow as the grpcurl tests, seen through creditline.CreditlineClient: typed errors with
Decimal numbers, and the hold context manager committing or releasing over the network.
Each test uses its own account.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from creditline import CreditlineClient, IdempotencyKeyReused, InsufficientCredits, NotFound
from creditline.v1 import grant_pb2, ledger_pb2, reservation_pb2

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

GRANT = ledger_pb2.LEDGER_ENTRY_KIND_GRANT
SPEND = ledger_pb2.LEDGER_ENTRY_KIND_SPEND
ZERO = Decimal(0)


class WorkFailed(Exception):
    """The work a hold paid for went wrong."""


@pytest.fixture(scope="module")
def client(server_process: ServerProcess) -> Iterator[CreditlineClient]:
    """The client connected to the module's server process."""
    with CreditlineClient(server_process.address, backoff=0) as c:
        yield c


def open_account(client: CreditlineClient, grant: Decimal) -> str:
    """A new prepaid account holding one purchased grant of `grant` credits."""
    account_id = f"client-{uuid.uuid4().hex[:12]}"
    assert client.create_account(account_id).account.account_id == account_id
    granted = client.grant_credits(account_id, grant, source=grant_pb2.GRANT_SOURCE_PURCHASE)
    assert Decimal(granted.ledger_entry.balance_after) == grant
    return account_id


def balance_of(client: CreditlineClient, account_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, held, available) from GetBalance."""
    balance = client.get_balance(account_id).balance
    return Decimal(balance.balance), Decimal(balance.held), Decimal(balance.available)


def test_grant_spend_and_history(client: CreditlineClient) -> None:
    grant, first, second = Decimal(40), Decimal("0.000001"), Decimal("12.5")
    account_id = open_account(client, grant)

    one = client.spend_credits(account_id, first, feature="embed")
    two = client.spend_credits(account_id, second, feature="chat")
    history = list(client.iter_ledger_entries(account_id, page_size=1))

    assert Decimal(one.available) == grant - first
    assert Decimal(two.available) == grant - first - second
    assert balance_of(client, account_id) == (grant - first - second, ZERO, grant - first - second)
    assert [(e.kind, Decimal(e.amount), Decimal(e.balance_after)) for e in history] == [
        (SPEND, -second, grant - first - second),
        (SPEND, -first, grant - first),
        (GRANT, grant, grant),
    ]
    assert [e.feature for e in history[:2]] == ["chat", "embed"]


def test_hold_commits_at_the_actual_amount(client: CreditlineClient) -> None:
    grant, hold, actual = Decimal(25), Decimal(10), Decimal("7.5")
    account_id = open_account(client, grant)

    with client.hold(account_id, str(hold), feature="render") as h:
        during_hold = balance_of(client, account_id)
        committed = h.commit(str(actual))
    fetched = client.get_reservation(h.reservation.reservation_id).reservation
    history = list(client.iter_ledger_entries(account_id))

    assert during_hold == (grant, hold, grant - hold)
    assert committed.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert Decimal(committed.reservation.committed_amount) == actual
    assert Decimal(committed.ledger_entry.amount) == -actual
    assert fetched.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert fetched.ledger_entry_id == committed.ledger_entry.entry_id
    assert balance_of(client, account_id) == (grant - actual, ZERO, grant - actual)
    assert [(e.kind, Decimal(e.amount)) for e in history] == [(SPEND, -actual), (GRANT, grant)]
    assert history[0].reservation_id == fetched.reservation_id
    assert history[0].feature == "render"


def test_hold_is_released_when_the_block_raises(client: CreditlineClient) -> None:
    grant, hold = Decimal(25), Decimal(10)
    account_id = open_account(client, grant)

    with pytest.raises(WorkFailed), client.hold(account_id, hold) as h:
        during_hold = balance_of(client, account_id)
        raise WorkFailed
    fetched = client.get_reservation(h.reservation.reservation_id).reservation

    assert during_hold == (grant, hold, grant - hold)
    assert h.reservation.status == reservation_pb2.RESERVATION_STATUS_RELEASED
    assert fetched.status == reservation_pb2.RESERVATION_STATUS_RELEASED
    assert balance_of(client, account_id) == (grant, ZERO, grant)
    assert [e.kind for e in client.iter_ledger_entries(account_id)] == [GRANT]


def test_insufficient_credits_is_typed_with_decimal_numbers(client: CreditlineClient) -> None:
    grant, hold, wanted = Decimal("10.5"), Decimal(4), Decimal(8)
    account_id = open_account(client, grant)
    client.reserve_credits(account_id, hold)

    with pytest.raises(InsufficientCredits) as spend_refused:
        client.spend_credits(account_id, wanted)
    with pytest.raises(InsufficientCredits) as hold_refused, client.hold(account_id, wanted):
        pytest.fail("a hold beyond the available credits was placed")

    error = spend_refused.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "INSUFFICIENT_CREDITS"
    assert error.account_id == account_id
    assert (error.balance, error.held, error.available, error.required) == (
        grant,
        hold,
        grant - hold,
        wanted,
    )
    assert all(
        isinstance(n, Decimal) for n in (error.balance, error.held, error.available, error.required)
    )
    assert hold_refused.value.required == wanted
    assert balance_of(client, account_id) == (grant, hold, grant - hold)


def test_replayed_spend_returns_the_first_entry(client: CreditlineClient) -> None:
    grant, spend = Decimal(20), Decimal(3)
    account_id = open_account(client, grant)
    key = uuid.uuid4().hex

    first = client.spend_credits(account_id, spend, idempotency_key=key)
    replay = client.spend_credits(account_id, spend, idempotency_key=key)
    with pytest.raises(IdempotencyKeyReused):
        client.spend_credits(account_id, spend + 1, idempotency_key=key)

    assert not first.replayed
    assert replay.replayed
    assert replay.ledger_entry.entry_id == first.ledger_entry.entry_id
    assert balance_of(client, account_id) == (grant - spend, ZERO, grant - spend)


def test_unknown_account_is_not_found(client: CreditlineClient) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"

    with pytest.raises(NotFound) as refused:
        client.get_balance(missing)

    assert refused.value.reason == "ACCOUNT_NOT_FOUND"
    assert refused.value.metadata["account_id"] == missing
