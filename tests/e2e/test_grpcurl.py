"""grpcurl against a real `creditline serve` process, through server reflection only.

No proto file is passed to grpcurl: every request and response type it encodes, and the
google.rpc.ErrorInfo it prints, is resolved through the server's reflection service, as an
engineer poking a running server would do. Each test uses its own account.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
import pytest
from creditline.v1 import credit_service_pb2

from tests.e2e.conftest import Grpcurl, ServerProcess

pytestmark = pytest.mark.e2e

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
ZERO = Decimal(0)


@pytest.fixture(scope="module")
def grpcurl(server_process: ServerProcess) -> Grpcurl:
    """grpcurl aimed at the module's server."""
    return Grpcurl(server_process.address)


def new_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def open_account(grpcurl: Grpcurl, grant: Decimal) -> str:
    """A new prepaid account holding one purchased grant of `grant` credits."""
    account_id = f"grpcurl-{uuid.uuid4().hex[:12]}"
    created = grpcurl.call(
        "CreateAccount",
        {
            "account": {"account_id": account_id, "billing_mode": "BILLING_MODE_PREPAID"},
            "idempotency_key": new_key(),
        },
    )
    assert created["account"]["account_id"] == account_id
    granted = grpcurl.call(
        "GrantCredits",
        {
            "account_id": account_id,
            "amount": str(grant),
            "source": "GRANT_SOURCE_PURCHASE",
            "idempotency_key": new_key(),
        },
    )
    assert granted["grant"]["status"] == "GRANT_STATUS_ACTIVE"
    assert Decimal(granted["ledger_entry"]["amount"]) == grant
    assert Decimal(granted["ledger_entry"]["balance_after"]) == grant
    return account_id


def balance_of(grpcurl: Grpcurl, account_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, held, available) from GetBalance."""
    balance = grpcurl.call("GetBalance", {"account_id": account_id})["balance"]
    assert balance["account_id"] == account_id
    return Decimal(balance["balance"]), Decimal(balance["held"]), Decimal(balance["available"])


def test_list_shows_the_services_through_reflection(grpcurl: Grpcurl) -> None:
    listed = grpcurl.run("list")

    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "creditline.v1.CreditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_describe_shows_every_rpc_of_the_service(grpcurl: Grpcurl) -> None:
    described = grpcurl.run("describe", "creditline.v1.CreditService")

    assert described.returncode == 0, described.stderr
    service = credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"]
    for method in service.methods:
        assert (
            f"rpc {method.name} ( .{method.input_type.full_name} ) "
            f"returns ( .{method.output_type.full_name} );"
        ) in described.stdout


def test_health_check_answers_serving(grpcurl: Grpcurl) -> None:
    overall = grpcurl.call("grpc.health.v1.Health/Check")
    credit_service = grpcurl.call(
        "grpc.health.v1.Health/Check", {"service": "creditline.v1.CreditService"}
    )

    assert overall == {"status": "SERVING"}
    assert credit_service == {"status": "SERVING"}


def test_grant_spend_hold_commit_and_history(grpcurl: Grpcurl) -> None:
    grant, spend, hold, actual = Decimal(100), Decimal("12.5"), Decimal(30), Decimal("20.25")
    account_id = open_account(grpcurl, grant)

    spent = grpcurl.call(
        "SpendCredits",
        {
            "account_id": account_id,
            "amount": str(spend),
            "feature": "chat",
            "idempotency_key": new_key(),
        },
    )
    reserved = grpcurl.call(
        "ReserveCredits",
        {
            "account_id": account_id,
            "amount": str(hold),
            "ttl": "300s",
            "idempotency_key": new_key(),
        },
    )["reservation"]
    during_hold = balance_of(grpcurl, account_id)
    committed = grpcurl.call(
        "CommitReservation",
        {
            "reservation_id": reserved["reservation_id"],
            "amount": str(actual),
            "idempotency_key": new_key(),
        },
    )
    fetched = grpcurl.call("GetReservation", {"reservation_id": reserved["reservation_id"]})
    after = balance_of(grpcurl, account_id)
    history = grpcurl.call("ListLedgerEntries", {"account_id": account_id})["ledger_entries"]

    assert Decimal(spent["ledger_entry"]["amount"]) == -spend
    assert Decimal(spent["available"]) == grant - spend
    assert "replayed" not in spent
    assert reserved["status"] == "RESERVATION_STATUS_ACTIVE"
    assert Decimal(reserved["amount"]) == hold
    assert during_hold == (grant - spend, hold, grant - spend - hold)
    assert committed["reservation"]["status"] == "RESERVATION_STATUS_COMMITTED"
    assert Decimal(committed["reservation"]["committed_amount"]) == actual
    assert Decimal(committed["ledger_entry"]["amount"]) == -actual
    assert Decimal(committed["ledger_entry"]["balance_after"]) == grant - spend - actual
    assert fetched["reservation"]["status"] == "RESERVATION_STATUS_COMMITTED"
    assert fetched["reservation"]["ledger_entry_id"] == committed["ledger_entry"]["entry_id"]
    assert after == (grant - spend - actual, ZERO, grant - spend - actual)
    assert [(e["kind"], Decimal(e["amount"]), Decimal(e["balance_after"])) for e in history] == [
        ("LEDGER_ENTRY_KIND_SPEND", -actual, grant - spend - actual),
        ("LEDGER_ENTRY_KIND_SPEND", -spend, grant - spend),
        ("LEDGER_ENTRY_KIND_GRANT", grant, grant),
    ]
    assert history[0]["reservation_id"] == reserved["reservation_id"]
    assert history[1]["entry_id"] == spent["ledger_entry"]["entry_id"]
    assert history[1]["feature"] == "chat"


def test_released_hold_leaves_the_balance_alone(grpcurl: Grpcurl) -> None:
    grant, hold = Decimal(50), Decimal("7.5")
    account_id = open_account(grpcurl, grant)
    reserved = grpcurl.call(
        "ReserveCredits",
        {"account_id": account_id, "amount": str(hold), "idempotency_key": new_key()},
    )["reservation"]
    during_hold = balance_of(grpcurl, account_id)

    released = grpcurl.call(
        "ReleaseReservation",
        {"reservation_id": reserved["reservation_id"], "idempotency_key": new_key()},
    )
    fetched = grpcurl.call("GetReservation", {"reservation_id": reserved["reservation_id"]})
    history = grpcurl.call("ListLedgerEntries", {"account_id": account_id})["ledger_entries"]

    assert during_hold == (grant, hold, grant - hold)
    assert released["reservation"]["status"] == "RESERVATION_STATUS_RELEASED"
    assert fetched["reservation"]["status"] == "RESERVATION_STATUS_RELEASED"
    assert balance_of(grpcurl, account_id) == (grant, ZERO, grant)
    assert [e["kind"] for e in history] == ["LEDGER_ENTRY_KIND_GRANT"]


def test_insufficient_credits_carries_the_numbers_in_error_info(grpcurl: Grpcurl) -> None:
    grant, hold, wanted = Decimal(10), Decimal(4), Decimal("8.5")
    account_id = open_account(grpcurl, grant)
    grpcurl.call(
        "ReserveCredits",
        {"account_id": account_id, "amount": str(hold), "idempotency_key": new_key()},
    )

    error = grpcurl.fail(
        "SpendCredits",
        {"account_id": account_id, "amount": str(wanted), "idempotency_key": new_key()},
    )

    assert error.code == FAILED_PRECONDITION
    assert error.exit_code == 64 + FAILED_PRECONDITION
    info = error.error_info()
    assert info["reason"] == "INSUFFICIENT_CREDITS"
    assert info["domain"] == "creditline.dev"
    metadata = info["metadata"]
    assert metadata["account_id"] == account_id
    numbers = {key: Decimal(metadata[key]) for key in ("balance", "held", "available", "required")}
    assert numbers == {
        "balance": grant,
        "held": hold,
        "available": grant - hold,
        "required": wanted,
    }
    assert balance_of(grpcurl, account_id) == (grant, hold, grant - hold)


def test_replayed_spend_returns_the_first_entry_and_moves_nothing(grpcurl: Grpcurl) -> None:
    grant, spend = Decimal(20), Decimal(3)
    account_id = open_account(grpcurl, grant)
    request = {"account_id": account_id, "amount": str(spend), "idempotency_key": new_key()}

    first = grpcurl.call("SpendCredits", request)
    replay = grpcurl.call("SpendCredits", request)
    reused = grpcurl.fail("SpendCredits", {**request, "amount": str(spend + 1)})

    assert "replayed" not in first
    assert replay["replayed"] is True
    assert replay["ledger_entry"]["entry_id"] == first["ledger_entry"]["entry_id"]
    assert replay["available"] == first["available"]
    assert reused.code == INVALID_ARGUMENT
    assert reused.error_info()["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert balance_of(grpcurl, account_id) == (grant - spend, ZERO, grant - spend)
    history = grpcurl.call("ListLedgerEntries", {"account_id": account_id})["ledger_entries"]
    assert [e["kind"] for e in history] == ["LEDGER_ENTRY_KIND_SPEND", "LEDGER_ENTRY_KIND_GRANT"]
