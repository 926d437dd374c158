"""Bad input of every shape gets INVALID_ARGUMENT or NOT_FOUND naming the field, and writes
nothing. Requests go through the raw stub so the typed client's own checks cannot hide a gap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from creditline.v1 import account_pb2, grant_pb2
from creditline.v1 import credit_service_pb2 as pb
from creditline.v1.credit_service_pb2_grpc import CreditServiceStub
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine

from tests.helpers import table_counts

OK_KEY = "key-1"
LONG = "x" * 129


@pytest.fixture
def acct(stub: CreditServiceStub) -> str:
    stub.CreateAccount(
        pb.CreateAccountRequest(
            account=account_pb2.Account(
                account_id="acct", billing_mode=account_pb2.BILLING_MODE_PREPAID
            ),
            idempotency_key="create",
        )
    )
    stub.GrantCredits(
        pb.GrantCreditsRequest(
            account_id="acct",
            amount="10",
            source=grant_pb2.GRANT_SOURCE_PURCHASE,
            idempotency_key="grant",
        )
    )
    return "acct"


def spend(**fields: Any) -> pb.SpendCreditsRequest:
    return pb.SpendCreditsRequest(
        **{"account_id": "acct", "amount": "1", "idempotency_key": OK_KEY, **fields}
    )


def grant(**fields: Any) -> pb.GrantCreditsRequest:
    base = {
        "account_id": "acct",
        "amount": "1",
        "source": grant_pb2.GRANT_SOURCE_PURCHASE,
        "idempotency_key": OK_KEY,
    }
    return pb.GrantCreditsRequest(**{**base, **fields})


def create(**fields: Any) -> pb.CreateAccountRequest:
    account = {"account_id": "new", "billing_mode": account_pb2.BILLING_MODE_PREPAID}
    key = fields.pop("idempotency_key", OK_KEY)
    return pb.CreateAccountRequest(
        account=account_pb2.Account(**{**account, **fields}), idempotency_key=key
    )


def reserve(**fields: Any) -> pb.ReserveCreditsRequest:
    return pb.ReserveCreditsRequest(
        **{"account_id": "acct", "amount": "1", "idempotency_key": OK_KEY, **fields}
    )


BAD: list[tuple[str, str, Any, str]] = [
    # (case, rpc, request, field the error must name)
    ("negative amount", "SpendCredits", spend(amount="-5"), "amount"),
    ("zero amount", "SpendCredits", spend(amount="0"), "amount"),
    ("over-precise amount", "SpendCredits", spend(amount="0.0000001"), "amount"),
    ("non-numeric amount", "SpendCredits", spend(amount="ten"), "amount"),
    ("exponent amount", "SpendCredits", spend(amount="1e3"), "amount"),
    ("huge amount", "SpendCredits", spend(amount="1" + "0" * 12), "amount"),
    ("empty amount", "SpendCredits", spend(amount=""), "amount"),
    ("missing key", "SpendCredits", spend(idempotency_key=""), "idempotency_key"),
    ("key with spaces", "SpendCredits", spend(idempotency_key="a b"), "idempotency_key"),
    ("over-long key", "SpendCredits", spend(idempotency_key="k" * 256), "idempotency_key"),
    ("empty account id", "SpendCredits", spend(account_id=""), "account_id"),
    ("over-long account id", "SpendCredits", spend(account_id=LONG), "account_id"),
    ("account id with newline", "SpendCredits", spend(account_id="acct\n"), "account_id"),
    ("over-long feature", "SpendCredits", spend(feature="f" * 129), "feature"),
    (
        "too many labels",
        "SpendCredits",
        spend(metadata={str(i): "" for i in range(51)}),
        "metadata",
    ),
    ("unspecified source", "GrantCredits", grant(source=0), "source"),
    ("unknown source", "GrantCredits", grant(source=99), "source"),
    ("priority out of range", "GrantCredits", grant(priority=101), "priority"),
    (
        "expiry before effective",
        "GrantCredits",
        grant(
            effective_time=timestamp_pb2.Timestamp(seconds=2_000_000_000),
            expire_time=timestamp_pb2.Timestamp(seconds=1_999_999_999),
        ),
        "expire_time",
    ),
    (
        "expiry in the past",
        "GrantCredits",
        grant(expire_time=timestamp_pb2.Timestamp(seconds=1)),
        "expire_time",
    ),
    ("unspecified billing mode", "CreateAccount", create(billing_mode=0), "account.billing_mode"),
    ("empty new account id", "CreateAccount", create(account_id=""), "account.account_id"),
    ("over-long new account id", "CreateAccount", create(account_id=LONG), "account.account_id"),
    (
        "bad threshold",
        "CreateAccount",
        create(low_balance_threshold="-1"),
        "account.low_balance_threshold",
    ),
    ("negative ttl", "ReserveCredits", reserve(ttl=duration_pb2.Duration(seconds=-1)), "ttl"),
    (
        "ttl over the maximum",
        "ReserveCredits",
        reserve(ttl=duration_pb2.Duration(seconds=90_000)),
        "ttl",
    ),
    (
        "zero commit key",
        "CommitReservation",
        pb.CommitReservationRequest(reservation_id="rsv_x", amount="1"),
        "idempotency_key",
    ),
    (
        "negative commit",
        "CommitReservation",
        pb.CommitReservationRequest(reservation_id="rsv_x", amount="-1", idempotency_key=OK_KEY),
        "amount",
    ),
    (
        "unspecified kind filter",
        "ListLedgerEntries",
        pb.ListLedgerEntriesRequest(account_id="acct", kinds=[0]),
        "kinds",
    ),
    (
        "page size too big",
        "ListLedgerEntries",
        pb.ListLedgerEntriesRequest(account_id="acct", page_size=1001),
        "page_size",
    ),
    (
        "forged page token",
        "ListLedgerEntries",
        pb.ListLedgerEntriesRequest(account_id="acct", page_token="bm9wZQ"),
        "page_token",
    ),
    (
        "update without mask",
        "UpdateAccount",
        pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id="acct"), idempotency_key=OK_KEY
        ),
        "update_mask",
    ),
    (
        "update of a read-only field",
        "UpdateAccount",
        pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id="acct"),
            update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
            idempotency_key=OK_KEY,
        ),
        "update_mask",
    ),
    (
        "zero refund",
        "RefundSpend",
        pb.RefundSpendRequest(ledger_entry_id="txn_x", amount="0", idempotency_key=OK_KEY),
        "amount",
    ),
]

NOT_FOUND: list[tuple[str, str, Any, str]] = [
    ("unknown account spend", "SpendCredits", spend(account_id="ghost"), "ACCOUNT_NOT_FOUND"),
    (
        "unknown account balance",
        "GetBalance",
        pb.GetBalanceRequest(account_id="ghost"),
        "ACCOUNT_NOT_FOUND",
    ),
    ("unknown account grant", "GrantCredits", grant(account_id="ghost"), "ACCOUNT_NOT_FOUND"),
    ("unknown parent", "CreateAccount", create(parent_account_id="ghost"), "ACCOUNT_NOT_FOUND"),
    (
        "unknown hold",
        "CommitReservation",
        pb.CommitReservationRequest(reservation_id="rsv_nope", amount="1", idempotency_key=OK_KEY),
        "RESERVATION_NOT_FOUND",
    ),
    (
        "unknown grant",
        "VoidGrant",
        pb.VoidGrantRequest(grant_id="grt_nope", idempotency_key=OK_KEY),
        "GRANT_NOT_FOUND",
    ),
    (
        "unknown entry",
        "RefundSpend",
        pb.RefundSpendRequest(ledger_entry_id="txn_nope", idempotency_key=OK_KEY),
        "LEDGER_ENTRY_NOT_FOUND",
    ),
    (
        "unknown ledger account",
        "ListLedgerEntries",
        pb.ListLedgerEntriesRequest(account_id="ghost"),
        "ACCOUNT_NOT_FOUND",
    ),
]


def details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "every error carries a google.rpc.Status"
    info, fields = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return info, fields


def call(stub: CreditServiceStub, rpc: str, request: Any) -> Callable[[], Any]:
    return lambda: getattr(stub, rpc)(request)


@pytest.mark.parametrize(("case", "rpc", "request_", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_invalid_argument_naming_the_field(
    stub: CreditServiceStub,
    acct: str,
    engine: Engine,
    case: str,
    rpc: str,
    request_: Any,
    field: str,
) -> None:
    before = table_counts(engine)
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, rpc, request_)()
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info, fields = details(error)
    assert info.domain == "creditline.dev"
    assert info.metadata["field"] == field
    assert fields == [field]
    assert field in error.details()
    assert table_counts(engine) == before


@pytest.mark.parametrize(
    ("case", "rpc", "request_", "reason"), NOT_FOUND, ids=[n[0] for n in NOT_FOUND]
)
def test_unknown_resources_are_not_found(
    stub: CreditServiceStub,
    acct: str,
    engine: Engine,
    case: str,
    rpc: str,
    request_: Any,
    reason: str,
) -> None:
    before = table_counts(engine)
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, rpc, request_)()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(caught.value)
    assert info.reason == reason
    assert any(
        value in ("ghost", "rsv_nope", "grt_nope", "txn_nope") for value in info.metadata.values()
    )
    assert table_counts(engine) == before


def test_insufficient_credits_carries_the_numbers(
    stub: CreditServiceStub, acct: str, engine: Engine
) -> None:
    stub.ReserveCredits(reserve(amount="2.5", idempotency_key="hold"))
    before = table_counts(engine)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SpendCredits(spend(amount="8"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(caught.value)
    assert info.reason == "INSUFFICIENT_CREDITS"
    assert dict(info.metadata) == {
        "account_id": "acct",
        "balance": "10",
        "held": "2.5",
        "available": "7.5",
        "required": "8",
    }
    assert table_counts(engine) == before
