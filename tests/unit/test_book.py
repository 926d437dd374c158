"""The account book on its own: drain order, holds, expiry, voids and refunds, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_service.domain.book import AccountBook
from billing_service.domain.errors import FailedPrecondition, InsufficientCredits
from billing_service.domain.model import EntryContext, EntryKind, GrantSource, GrantStatus

NOW = datetime(2026, 3, 1, tzinfo=UTC)
C = 1_000_000  # one credit in micro-credits


def book_at(now: datetime = NOW) -> AccountBook:
    return AccountBook("acct", balance=0, held=0, buckets=[], now=now)


def grant(
    book: AccountBook,
    credits: int,
    *,
    priority: int | None = None,
    expires: datetime | None = None,
    effective: datetime | None = None,
) -> str:
    bucket, _ = book.grant(
        source=GrantSource.PURCHASE,
        amount=credits * C,
        priority=priority,
        effective_at=effective,
        expires_at=expires,
        description="",
        metadata={},
        context=EntryContext(),
    )
    return bucket.id


def assert_consistent(book: AccountBook) -> None:
    live = [b for b in book.buckets.values() if b.status is not GrantStatus.PENDING]
    assert book.balance == sum(b.remaining for b in live)
    assert book.held == sum(b.held for b in live)
    assert all(0 <= b.held <= b.remaining for b in book.buckets.values())


def test_drains_by_priority_then_soonest_expiry_then_age() -> None:
    book = book_at()
    never = grant(book, 10)
    later = grant(book, 10, expires=NOW + timedelta(days=30))
    sooner = grant(book, 10, expires=NOW + timedelta(days=3))
    first = grant(book, 10, priority=10)
    entry = book.spend(35 * C, EntryContext())
    assert entry.buckets == ((first, -10 * C), (sooner, -10 * C), (later, -10 * C), (never, -5 * C))
    assert book.balance == 5 * C
    assert_consistent(book)


def test_equal_buckets_drain_oldest_first() -> None:
    book = book_at()
    older = grant(book, 5)
    book.now += timedelta(seconds=1)
    grant(book, 5)
    assert book.spend(3 * C, EntryContext()).buckets == ((older, -3 * C),)


def test_refusal_changes_nothing() -> None:
    book = book_at()
    grant(book, 5)
    held = book.hold(2 * C)
    before = (book.balance, book.held, dict(book.buckets), len(book.new_entries))
    with pytest.raises(InsufficientCredits) as caught:
        book.spend(4 * C, EntryContext())
    assert caught.value.metadata == {
        "account_id": "acct",
        "balance": "5",
        "held": "2",
        "available": "3",
        "required": "4",
    }
    assert (book.balance, book.held, dict(book.buckets), len(book.new_entries)) == before
    assert held


def test_settle_below_hold_releases_the_rest() -> None:
    book = book_at()
    grant(book, 10)
    allocations = book.hold(6 * C)
    entry = book.settle(allocations, 4 * C, EntryContext(), "rsv_1")
    assert entry is not None
    assert entry.amount == -4 * C
    assert entry.reservation_id == "rsv_1"
    assert (book.balance, book.held, book.available) == (6 * C, 0, 6 * C)
    assert_consistent(book)


def test_settle_above_hold_needs_the_difference_available() -> None:
    book = book_at()
    grant(book, 10)
    allocations = book.hold(6 * C)
    book.hold(3 * C)
    with pytest.raises(InsufficientCredits) as caught:
        book.settle(allocations, 8 * C, EntryContext(), "rsv_1")
    assert caught.value.metadata["required"] == "2"
    assert (book.balance, book.held) == (10 * C, 9 * C)
    entry = book.settle(allocations, 7 * C, EntryContext(), "rsv_1")
    assert entry is not None
    assert entry.amount == -7 * C
    assert (book.balance, book.held) == (3 * C, 3 * C)
    assert_consistent(book)


def test_settle_zero_writes_no_entry() -> None:
    book = book_at()
    grant(book, 10)
    assert book.settle(book.hold(4 * C), 0, EntryContext(), "rsv_1") is None
    assert (book.balance, book.held) == (10 * C, 0)


def test_expiry_keeps_the_held_part_until_the_hold_resolves() -> None:
    book = book_at()
    bucket = grant(book, 10, expires=NOW + timedelta(hours=1))
    allocations = book.hold(4 * C)
    book.now += timedelta(hours=2)
    book.mature()
    expiry = book.new_entries[-1]
    assert (expiry.kind, expiry.amount) == (EntryKind.EXPIRY, -6 * C)
    assert book.buckets[bucket].status is GrantStatus.EXPIRED
    assert (book.balance, book.held, book.available) == (4 * C, 4 * C, 0)
    entry = book.settle(allocations, 1 * C, EntryContext(), "rsv_1")
    assert entry is not None
    assert entry.amount == -1 * C
    closing = book.new_entries[-1]
    assert (closing.kind, closing.amount) == (EntryKind.EXPIRY, -3 * C)
    assert (book.balance, book.held) == (0, 0)
    assert_consistent(book)


def test_pending_grant_joins_the_balance_when_it_takes_effect() -> None:
    book = book_at()
    bucket = grant(book, 10, effective=NOW + timedelta(days=1))
    assert book.new_entries == []
    assert book.balance == 0
    assert book.next_event_at() == NOW + timedelta(days=1)
    book.now += timedelta(days=1)
    book.mature()
    assert book.buckets[bucket].status is GrantStatus.ACTIVE
    assert [(e.kind, e.amount) for e in book.new_entries] == [(EntryKind.GRANT, 10 * C)]
    assert book.balance == 10 * C


def test_void_removes_the_unheld_remainder_only() -> None:
    book = book_at()
    bucket = grant(book, 10)
    allocations = book.hold(3 * C)
    _, entry = book.void(bucket, EntryContext())
    assert entry is not None
    assert (entry.kind, entry.amount) == (EntryKind.VOID, -7 * C)
    book.release(allocations)
    assert [(e.kind, e.amount) for e in book.new_entries[-2:]] == [
        (EntryKind.VOID, -7 * C),
        (EntryKind.VOID, -3 * C),
    ]
    assert book.balance == 0
    with pytest.raises(FailedPrecondition) as caught:
        book.void(bucket, EntryContext())
    assert caught.value.reason == "GRANT_NOT_ACTIVE"


def test_partial_refunds_continue_where_the_last_stopped() -> None:
    book = book_at()
    first = grant(book, 5, priority=0)
    second = grant(book, 5, priority=1)
    spend = book.spend(8 * C, EntryContext())
    one = book.refund(spend, 0, 2 * C, EntryContext())
    assert one.buckets == ((second, 2 * C),)
    two = book.refund(spend, 2 * C, 3 * C, EntryContext())
    assert two.buckets == ((second, 1 * C), (first, 2 * C))
    with pytest.raises(FailedPrecondition) as caught:
        book.refund(spend, 5 * C, 4 * C, EntryContext())
    assert caught.value.reason == "REFUND_EXCEEDS_SPEND"
    assert book.balance == 7 * C
    assert_consistent(book)


def test_refund_into_an_expired_bucket_goes_to_a_new_refund_bucket() -> None:
    book = book_at()
    grant(book, 5, expires=NOW + timedelta(hours=1))
    spend = book.spend(4 * C, EntryContext())
    book.now += timedelta(hours=2)
    book.mature()
    entry = book.refund(spend, 0, None, EntryContext())
    ((new_id, credits),) = entry.buckets
    new = book.buckets[new_id]
    assert (new.source, new.amount, new.expires_at, credits) == (
        GrantSource.REFUND,
        4 * C,
        None,
        4 * C,
    )
    assert book.balance == 4 * C
    assert_consistent(book)


def test_refund_of_a_non_spend_is_refused() -> None:
    book = book_at()
    grant(book, 5)
    with pytest.raises(FailedPrecondition) as caught:
        book.refund(book.new_entries[0], 0, None, EntryContext())
    assert caught.value.reason == "NOT_A_SPEND"
