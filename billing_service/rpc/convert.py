"""Translation between creditline.v1 messages and domain values, in both directions.

Inbound conversion refuses what the domain cannot represent (unparseable amounts, unspecified
or unknown enum numbers) with InvalidField naming the request field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from creditline.v1 import (
    account_pb2,
    balance_pb2,
    grant_pb2,
    ledger_pb2,
    reservation_pb2,
)

from billing_service.domain.amounts import format_amount, parse_amount
from billing_service.domain.model import (
    Account,
    BalanceView,
    Bucket,
    LedgerEntry,
    Movement,
    Reservation,
)
from billing_service.rpc.pricing_convert import cost_out, usage_lines_out
from billing_service.rpc.wire import enum_out, time_out


def amount_in(text: str, field: str, *, allow_zero: bool = False) -> int:
    """Micro-credits from an API amount string."""
    return parse_amount(text, field, allow_zero=allow_zero)


def optional_amount_in(text: str, field: str) -> int | None:
    """Micro-credits, or None for an empty string."""
    return parse_amount(text, field, allow_zero=True) if text else None


def movements_out(
    movements: Iterable[Movement], target: Iterable[ledger_pb2.BucketMovement]
) -> None:
    """Fill a repeated BucketMovement field."""
    for grant_id, credits in movements:
        target.add(grant_id=grant_id, amount=format_amount(credits))  # type: ignore[attr-defined]


def account_out(account: Account) -> account_pb2.Account:
    """The API form of an account."""
    message = account_pb2.Account(
        account_id=account.id,
        billing_mode=enum_out("BILLING_MODE", account.billing_mode),  # type: ignore[arg-type]
        stripe_customer_id=account.stripe_customer_id,
        parent_account_id=account.parent_id,
        low_balance_threshold=(
            ""
            if account.low_balance_threshold is None
            else format_amount(account.low_balance_threshold)
        ),
        metadata=dict(account.metadata),
    )
    time_out(account.created_at, message.create_time)
    time_out(account.updated_at, message.update_time)
    return message


def grant_out(bucket: Bucket) -> grant_pb2.Grant:
    """The API form of a grant's bucket."""
    message = grant_pb2.Grant(
        grant_id=bucket.id,
        account_id=bucket.account_id,
        source=enum_out("GRANT_SOURCE", bucket.source),  # type: ignore[arg-type]
        amount=format_amount(bucket.amount),
        remaining=format_amount(bucket.remaining),
        held=format_amount(bucket.held),
        priority=bucket.priority,
        status=enum_out("GRANT_STATUS", bucket.status),  # type: ignore[arg-type]
        description=bucket.description,
        metadata=dict(bucket.metadata),
    )
    time_out(bucket.effective_at, message.effective_time)
    time_out(bucket.expires_at, message.expire_time)
    time_out(bucket.created_at, message.create_time)
    return message


def entry_out(entry: LedgerEntry) -> ledger_pb2.LedgerEntry:
    """The API form of a ledger entry."""
    message = ledger_pb2.LedgerEntry(
        entry_id=entry.id,
        account_id=entry.account_id,
        kind=enum_out("LEDGER_ENTRY_KIND", entry.kind),  # type: ignore[arg-type]
        amount=format_amount(entry.amount),
        balance_after=format_amount(entry.balance_after),
        idempotency_key=entry.idempotency_key,
        feature=entry.feature,
        request_id=entry.request_id,
        reservation_id=entry.reservation_id,
        refunded_entry_id=entry.refunded_entry_id,
        metadata=dict(entry.metadata),
        price_book_version=entry.price_book_version,
        usage=usage_lines_out(entry.usage),
    )
    movements_out(entry.buckets, message.buckets)
    time_out(entry.created_at, message.create_time)
    return message


def reservation_out(hold: Reservation) -> reservation_pb2.Reservation:
    """The API form of a hold."""
    message = reservation_pb2.Reservation(
        reservation_id=hold.id,
        account_id=hold.account_id,
        amount=format_amount(hold.amount),
        status=enum_out("RESERVATION_STATUS", hold.status),  # type: ignore[arg-type]
        committed_amount=(
            "" if hold.committed_amount is None else format_amount(hold.committed_amount)
        ),
        feature=hold.feature,
        request_id=hold.request_id,
        metadata=dict(hold.metadata),
        ledger_entry_id=hold.ledger_entry_id,
        overrun_policy=enum_out("OVERRUN_POLICY", hold.overrun_policy),  # type: ignore[arg-type]
    )
    if hold.pricing is not None:
        message.estimate.CopyFrom(cost_out(hold.pricing.estimate))
    movements_out(((g, -c) for g, c in hold.allocations), message.allocations)
    time_out(hold.created_at, message.create_time)
    time_out(hold.expires_at, message.expire_time)
    time_out(hold.resolved_at, message.resolve_time)
    return message


def balance_out(view: BalanceView) -> balance_pb2.Balance:
    """The API form of a balance."""
    message = balance_pb2.Balance(
        account_id=view.account_id,
        balance=format_amount(view.balance),
        held=format_amount(view.held),
        available=format_amount(view.available),
        grants=[grant_out(b) for b in view.buckets],
        frozen=format_amount(view.frozen),
    )
    time_out(view.as_of, message.as_of_time)
    return message


def labels_in(values: Mapping[str, str]) -> dict[str, str]:
    """A proto map as a plain dict."""
    return dict(values)
