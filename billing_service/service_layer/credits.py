"""Use cases that move credits: grant, void, spend, reserve, commit, release, refund.

Each runs in one transaction that first locks the account row (books.open_book), so all
changes to one account are serialized on both databases while different accounts proceed in
parallel. Validation happens before the transaction; a refusal inside it rolls everything back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from billing_service.domain.errors import FailedPrecondition, InvalidField, NotFound
from billing_service.domain.ids import new_id
from billing_service.domain.model import (
    EntryContext,
    GrantSource,
    Reservation,
    ReservationStatus,
)
from billing_service.domain.pricing import (
    Comparison,
    OverrunPolicy,
    Usage,
    charge_for_overrun,
    compare,
    validate_usage,
)
from billing_service.domain.validation import (
    check_id,
    check_idempotency_key,
    check_metadata,
    check_priority,
    check_text,
)
from billing_service.service_layer.books import OpenBook, open_book, save_book
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.group_commit import PendingWrite
from billing_service.service_layer.idempotency import Outcome, fingerprint, run_idempotent
from billing_service.service_layer.pricing import price_actual, price_hold
from billing_service.service_layer.results import (
    GrantResult,
    RefundResult,
    ReservationResult,
    SpendResult,
)
from billing_service.service_layer.unit_of_work import Tx

R = TypeVar("R")
P = ParamSpec("P")

MAX_FEATURE = 128
MAX_REQUEST_ID = 255


def grant_credits(
    ctx: AppContext,
    *,
    account_id: str,
    amount: int,
    source: GrantSource | None,
    priority: int | None,
    effective_at: datetime | None,
    expires_at: datetime | None,
    description: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> Outcome[GrantResult]:
    """Grant credits into a new bucket."""
    check_id(account_id, "account_id")
    if source is None:
        raise InvalidField("source", "is required, e.g. GRANT_SOURCE_PURCHASE")
    check_priority(priority)
    check_text(description, "description")
    labels = check_metadata(metadata)
    if effective_at and expires_at and expires_at <= effective_at:
        raise InvalidField("expire_time", "must be later than effective_time")

    def work(tx: Tx, now: datetime) -> GrantResult:
        opened = open_book(tx, account_id, now)
        bucket, entry = opened.book.grant(
            source=source,
            amount=amount,
            priority=priority,
            effective_at=effective_at,
            expires_at=expires_at,
            description=description,
            metadata=labels,
            context=EntryContext(idempotency_key=idempotency_key, metadata=labels),
        )
        save_book(tx, opened)
        return GrantResult(bucket, entry)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="GrantCredits",
        key=idempotency_key,
        request={
            "account_id": account_id,
            "amount": amount,
            "source": source,
            "priority": priority,
            "effective_at": effective_at,
            "expires_at": expires_at,
            "description": description,
            "metadata": labels,
        },
        result_type=GrantResult,
        work=work,
    )


def void_grant(
    ctx: AppContext, *, grant_id: str, reason: str, idempotency_key: str
) -> Outcome[GrantResult]:
    """Void a grant's unspent remainder."""
    check_id(grant_id, "grant_id")
    check_text(reason, "reason")

    def work(tx: Tx, now: datetime) -> GrantResult:
        found = tx.buckets.get(grant_id)
        if found is None:
            raise NotFound("GRANT", "grant_id", grant_id)
        opened = open_book(tx, found.account_id, now)
        opened.book.add_buckets(tx.buckets.by_ids([grant_id]))
        bucket, entry = opened.book.void(
            grant_id,
            EntryContext(
                idempotency_key=idempotency_key, metadata={"reason": reason} if reason else {}
            ),
        )
        save_book(tx, opened)
        return GrantResult(bucket, entry)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="VoidGrant",
        key=idempotency_key,
        request={"grant_id": grant_id, "reason": reason},
        result_type=GrantResult,
        work=work,
    )


class Grouped(Generic[P, R]):
    """A write that goes through group commit: call it from a thread, or await `run_async`
    from a coroutine on an event loop. Either way its input is checked before it queues."""

    def __init__(self, prepare: Callable[Concatenate[AppContext, P], PendingWrite[R]]) -> None:
        self._prepare = prepare
        self.__doc__ = prepare.__doc__

    def __call__(self, ctx: AppContext, /, *args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        """Queue the write, wait in this thread, and return its outcome."""
        return ctx.writes.submit(ctx.db, ctx.clock, self._prepare(ctx, *args, **kwargs))

    async def run_async(self, ctx: AppContext, /, *args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        """Queue the write and await its outcome without holding a thread."""
        pending = self._prepare(ctx, *args, **kwargs)
        return await ctx.writes.submit_async(ctx.db, ctx.clock, pending)


@Grouped
def spend_credits(
    ctx: AppContext,
    *,
    account_id: str,
    amount: int,
    feature: str,
    request_id: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> PendingWrite[SpendResult]:
    """Debit credits at once."""
    check_id(account_id, "account_id")
    context = _context(idempotency_key, feature, request_id, metadata)

    def apply(tx: Tx, opened: OpenBook, now: datetime) -> SpendResult:
        entry = opened.book.spend(amount, context)
        return SpendResult(entry, opened.book.available)

    return _grouped(
        ctx,
        operation="SpendCredits",
        account_id=account_id,
        key=idempotency_key,
        request={"account_id": account_id, "amount": amount, "context": context},
        result_type=SpendResult,
        apply=apply,
    )


def _grouped(
    ctx: AppContext,
    *,
    operation: str,
    account_id: str = "",
    reservation_id: str = "",
    key: str,
    request: Mapping[str, Any],
    result_type: type[R],
    apply: Callable[[Tx, OpenBook, datetime], R],
) -> PendingWrite[R]:
    """One write, on an account or on a hold's account, for group commit (group_commit):
    concurrent writes share a transaction, each keeping its own outcome and idempotency
    record. When a shared transaction fails, the write runs alone in its own."""
    check_idempotency_key(key)

    def work(tx: Tx, now: datetime) -> R:
        owner = account_id or tx.reservations.accounts_of([reservation_id]).get(reservation_id)
        if owner is None:
            raise NotFound("RESERVATION", "reservation_id", reservation_id)
        opened = open_book(tx, owner, now)
        result = apply(tx, opened, now)
        save_book(tx, opened)
        return result

    def alone() -> Outcome[R]:
        return run_idempotent(
            ctx.db,
            ctx.clock,
            operation=operation,
            key=key,
            request=request,
            result_type=result_type,
            work=work,
        )

    return PendingWrite(
        operation,
        account_id,
        reservation_id,
        key,
        fingerprint(operation, request),
        result_type,
        apply,
        alone,
    )


@Grouped
def reserve_credits(
    ctx: AppContext,
    *,
    account_id: str,
    amount: int | None,
    estimate: Usage | None = None,
    overrun_policy: OverrunPolicy | None = None,
    ttl: timedelta | None,
    feature: str,
    request_id: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> PendingWrite[ReservationResult]:
    """Hold credits until commit, release or expiry: an amount, or an estimate's maximum."""
    check_id(account_id, "account_id")
    _one_of(amount, estimate, "estimate")
    if estimate is not None:
        validate_usage(estimate, "estimate", actual=False)
    context = _context(idempotency_key, feature, request_id, metadata)
    lifetime = ctx.holds.default_ttl if ttl is None else ttl
    if lifetime <= timedelta(0):
        raise InvalidField("ttl", "must be positive")
    if lifetime > ctx.holds.max_ttl:
        raise InvalidField("ttl", f"must be at most {int(ctx.holds.max_ttl.total_seconds())}s")

    def apply(tx: Tx, opened: OpenBook, now: datetime) -> ReservationResult:
        pricing = None
        held = amount
        if estimate is not None:
            pricing = price_hold(ctx.books, tx, account_id, estimate, now)
            # May be zero (a fully discounted account): the hold then only pins the pricing.
            held = pricing.estimate.total
        assert held is not None
        allocations = opened.book.hold(held)
        reservation = Reservation(
            id=new_id("rsv"),
            account_id=account_id,
            amount=held,
            status=ReservationStatus.ACTIVE,
            committed_amount=None,
            allocations=allocations,
            feature=context.feature,
            request_id=context.request_id,
            metadata=context.metadata,
            created_at=now,
            expires_at=now + lifetime,
            resolved_at=None,
            ledger_entry_id="",
            overrun_policy=overrun_policy or OverrunPolicy.ALLOW_FROM_BALANCE,
            pricing=pricing,
        )
        tx.reservations.add(reservation)
        opened.note_new_hold(reservation.expires_at)
        return ReservationResult(reservation)

    return _grouped(
        ctx,
        operation="ReserveCredits",
        account_id=account_id,
        key=idempotency_key,
        request={
            "account_id": account_id,
            "amount": amount,
            "estimate": estimate,
            "overrun_policy": overrun_policy,
            # What the caller asked, not the server default it resolved to.
            "ttl_us": None if ttl is None else ttl // timedelta(microseconds=1),
            "context": context,
        },
        result_type=ReservationResult,
        apply=apply,
    )


@Grouped
def commit_reservation(
    ctx: AppContext,
    *,
    reservation_id: str,
    amount: int | None,
    usage: Usage | None = None,
    idempotency_key: str,
) -> PendingWrite[ReservationResult]:
    """Settle a hold at the actual amount, or at the price of the actual usage."""
    check_id(reservation_id, "reservation_id")
    _one_of(amount, usage, "actual_usage")
    if usage is not None:
        validate_usage(usage, "actual_usage", actual=True)

    def apply(tx: Tx, opened: OpenBook, now: datetime) -> ReservationResult:
        hold = _hold_under_lock(tx, opened, reservation_id, now)
        cost = None
        comparisons: tuple[Comparison, ...] = ()
        actual = amount
        if usage is not None:
            cost = price_actual(
                ctx.books,
                tx,
                pinned=hold.pricing,
                account_id=hold.account_id,
                made_at=hold.created_at,
                usage=usage,
            )
            actual = cost.total
            if hold.pricing is not None:
                comparisons = compare(hold.pricing.estimate, cost)
        assert actual is not None
        charged = charge_for_overrun(hold.amount, actual, hold.overrun_policy)
        entry = opened.book.settle(
            hold.allocations,
            charged,
            EntryContext(
                idempotency_key=idempotency_key,
                feature=hold.feature,
                request_id=hold.request_id,
                metadata=hold.metadata,
                price_book_version=cost.version if cost else 0,
                usage=usage.lines if usage else (),
            ),
            reservation_id=hold.id,
        )
        settled = replace(
            hold,
            status=ReservationStatus.COMMITTED,
            committed_amount=charged,
            resolved_at=now,
            ledger_entry_id=entry.id if entry else "",
        )
        tx.reservations.save(settled)
        return ReservationResult(settled, entry, cost, comparisons, charged)

    return _grouped(
        ctx,
        operation="CommitReservation",
        reservation_id=reservation_id,
        key=idempotency_key,
        request={"reservation_id": reservation_id, "amount": amount, "usage": usage},
        result_type=ReservationResult,
        apply=apply,
    )


@Grouped
def release_reservation(
    ctx: AppContext, *, reservation_id: str, idempotency_key: str
) -> PendingWrite[ReservationResult]:
    """Let go of a hold without spending."""
    check_id(reservation_id, "reservation_id")

    def apply(tx: Tx, opened: OpenBook, now: datetime) -> ReservationResult:
        hold = _hold_under_lock(tx, opened, reservation_id, now, allow_expired=True)
        if hold.status is ReservationStatus.EXPIRED:
            # Expiry released it already: the caller's wish holds, so this is no error.
            return ReservationResult(hold)
        opened.book.release(hold.allocations)
        released = replace(hold, status=ReservationStatus.RELEASED, resolved_at=now)
        tx.reservations.save(released)
        return ReservationResult(released)

    return _grouped(
        ctx,
        operation="ReleaseReservation",
        reservation_id=reservation_id,
        key=idempotency_key,
        request={"reservation_id": reservation_id},
        result_type=ReservationResult,
        apply=apply,
    )


def refund_spend(
    ctx: AppContext,
    *,
    entry_id: str,
    amount: int | None,
    reason: str,
    idempotency_key: str,
) -> Outcome[RefundResult]:
    """Give back spent credits to where they came from."""
    check_id(entry_id, "ledger_entry_id")
    check_text(reason, "reason")

    def work(tx: Tx, now: datetime) -> RefundResult:
        spend = tx.ledger.get(entry_id)
        if spend is None:
            raise NotFound("LEDGER_ENTRY", "ledger_entry_id", entry_id)
        opened = open_book(tx, spend.account_id, now)
        opened.book.add_buckets(tx.buckets.by_ids(g for g, _ in spend.buckets))
        entry = opened.book.refund(
            spend,
            tx.ledger.refunded_total(entry_id),
            amount,
            EntryContext(
                idempotency_key=idempotency_key,
                feature=spend.feature,
                metadata={"reason": reason} if reason else {},
            ),
        )
        save_book(tx, opened)
        return RefundResult(entry)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="RefundSpend",
        key=idempotency_key,
        request={"entry_id": entry_id, "amount": amount, "reason": reason},
        result_type=RefundResult,
        work=work,
    )


def _hold_under_lock(
    tx: Tx, opened: OpenBook, reservation_id: str, now: datetime, *, allow_expired: bool = False
) -> Reservation:
    """The hold as it stands under its account's lock (swept when it expired meanwhile)."""
    swept = next((h for h in opened.expired_holds if h.id == reservation_id), None)
    hold = swept or tx.reservations.get(reservation_id)
    if hold is None:
        raise NotFound("RESERVATION", "reservation_id", reservation_id)
    if hold.status is ReservationStatus.EXPIRED and allow_expired:
        return hold
    if hold.status is ReservationStatus.EXPIRED or (
        hold.status is ReservationStatus.ACTIVE and hold.expires_at <= now
    ):
        raise FailedPrecondition(
            f"reservation {reservation_id!r} expired at {hold.expires_at.isoformat()}",
            reason="RESERVATION_EXPIRED",
            reservation_id=reservation_id,
            expire_time=hold.expires_at.isoformat(),
        )
    if hold.status is not ReservationStatus.ACTIVE:
        raise FailedPrecondition(
            f"reservation {reservation_id!r} is {hold.status.value.lower()} already",
            reason="RESERVATION_NOT_ACTIVE",
            reservation_id=reservation_id,
            status=hold.status.value,
        )
    return hold


def _one_of(amount: int | None, usage: Usage | None, usage_field: str) -> None:
    if amount is None and usage is None:
        raise InvalidField("amount", f"is required unless {usage_field} is given")
    if amount is not None and usage is not None:
        raise InvalidField("amount", f"must be empty when {usage_field} is given")


def _context(
    idempotency_key: str, feature: str, request_id: str, metadata: Mapping[str, str]
) -> EntryContext:
    return EntryContext(
        idempotency_key=idempotency_key,
        feature=check_text(feature, "feature", MAX_FEATURE),
        request_id=check_text(request_id, "request_id", MAX_REQUEST_ID),
        metadata=check_metadata(metadata),
    )
