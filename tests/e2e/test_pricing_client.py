"""The experiment runner's flow through the Python client against a real `creditline serve`:
estimate, estimate-sized hold, run, commit with the actual tokens."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from creditline import CreditlineClient, OverrunRejected
from creditline.usage import line
from creditline.v1 import ledger_pb2, pricing_pb2, reservation_pb2

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_client_e2e import balance_of, open_account

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(server_process: ServerProcess) -> Iterator[CreditlineClient]:
    with CreditlineClient(server_process.address, timeout=20) as c:
        yield c


def test_estimate_hold_run_commit(client: CreditlineClient) -> None:
    account = open_account(client, Decimal(500))
    planned = line(
        "anthropic",
        "claude-3-5-haiku-20241022",
        input_tokens=3000,
        cached_input_tokens=9000,
        max_output_tokens=1500,
    )
    quote = client.estimate_cost(planned, account_id=account)
    assert quote.covered
    expected = quote.estimate
    assert Decimal(expected.minimum_credits) < Decimal(expected.total_credits)
    assert Decimal(expected.total_credits) < Decimal(expected.maximum_credits)

    with client.priced_run(account, planned, tier="TIER_1A") as run:
        assert Decimal(run.reservation.amount) == Decimal(expected.maximum_credits) + 10
        run.commit(
            line(
                "anthropic",
                "claude-3-5-haiku-20241022",
                input_tokens=3000,
                cached_input_tokens=9000,
                output_tokens=640,
            )
        )
    done = run.commit_response
    charged = Decimal(done.charged)
    assert charged == Decimal(done.actual_cost.total_credits)
    assert Decimal(expected.minimum_credits) + 10 < charged < Decimal(run.reservation.amount)
    assert done.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    output = next(c for c in done.comparisons if c.token_class == pricing_pb2.TOKEN_CLASS_OUTPUT)
    assert (output.estimated_quantity, output.actual_quantity) == (1500, 640)

    (spend,) = client.list_ledger_entries(
        account, kinds=[ledger_pb2.LEDGER_ENTRY_KIND_SPEND]
    ).ledger_entries
    assert spend.price_book_version == expected.price_book_version
    assert [(u.model, u.output_tokens) for u in spend.usage] == [("claude-3-5-haiku-20241022", 640)]
    assert balance_of(client, account) == (Decimal(500) - charged, Decimal(0), 500 - charged)


def test_a_failed_run_releases_its_hold(client: CreditlineClient) -> None:
    account = open_account(client, Decimal(50))
    with (
        pytest.raises(RuntimeError, match="model crashed"),
        client.priced_run(
            account, line("openai", "gpt-4o-mini", input_tokens=1000, max_output_tokens=1000)
        ) as run,
    ):
        assert balance_of(client, account)[1] == Decimal(run.reservation.amount)
        raise RuntimeError("model crashed")
    assert balance_of(client, account) == (Decimal(50), Decimal(0), Decimal(50))


def test_reject_policy_refuses_an_overrun(client: CreditlineClient) -> None:
    account = open_account(client, Decimal(50))
    hold = client.reserve_credits(
        account,
        estimate=line("openai", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100),
        overrun_policy=pricing_pb2.OVERRUN_POLICY_REJECT,
    ).reservation
    with pytest.raises(OverrunRejected) as caught:
        client.commit_reservation(
            hold.reservation_id,
            actual_usage=line("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=5000),
        )
    assert caught.value.held == Decimal(hold.amount)
    assert caught.value.actual is not None and caught.value.actual > caught.value.held
    still = client.get_reservation(hold.reservation_id).reservation
    assert still.status == reservation_pb2.RESERVATION_STATUS_ACTIVE
