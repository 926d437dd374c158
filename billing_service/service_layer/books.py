"""Opening an account's book under its lock, and writing back what an operation changed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from billing_service.db.accounts import LockedAccount
from billing_service.domain.book import AccountBook
from billing_service.domain.errors import NotFound
from billing_service.domain.model import Reservation, ReservationStatus
from billing_service.service_layer.unit_of_work import Tx


@dataclass
class OpenBook:
    """A locked account, its book, and the holds that expired while it was opened."""

    locked: LockedAccount
    book: AccountBook
    swept: bool
    expired_holds: list[Reservation]


def open_book(tx: Tx, account_id: str, now: datetime) -> OpenBook:
    """Lock the account and bring its book up to now.

    Time-driven changes (pending grants taking effect, buckets and holds expiring) are applied
    here, before any operation, so every operation sees the balance as of now and writes the
    entries that explain it. The sweeper job does the same for accounts nobody touches.
    """
    locked = tx.accounts.lock(account_id)
    if locked is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    book = AccountBook(
        account_id,
        balance=locked.balance,
        held=locked.held,
        buckets=tx.buckets.live(account_id),
        now=now,
        frozen_sources=locked.frozen_sources,
    )
    swept = locked.sweep_due_at is not None and locked.sweep_due_at <= now
    expired: list[Reservation] = []
    if swept:
        for hold in tx.reservations.expired_active(account_id, now):
            book.release(hold.allocations)
            expired.append(replace(hold, status=ReservationStatus.EXPIRED, resolved_at=now))
    book.mature()
    return OpenBook(locked, book, swept, expired)


def save_book(tx: Tx, opened: OpenBook, *, new_hold_expiry: datetime | None = None) -> None:
    """Write the book's changes: buckets, entries, expired holds and the account's sums."""
    book = opened.book
    tx.buckets.add(book.created_buckets())
    tx.buckets.save(book.changed_buckets())
    if book.expiry_changed_ids:
        tx.buckets.save_expiries(book.changed_expiries())
    tx.ledger.append(book.new_entries)
    for hold in opened.expired_holds:
        tx.reservations.save(hold)
    candidates = [book.next_event_at(), new_hold_expiry]
    if opened.swept:
        candidates.append(tx.reservations.next_expiry(book.account_id))
    else:
        # Not yet due: it still stands for whatever hold or bucket event set it.
        candidates.append(opened.locked.sweep_due_at)
    present = [c for c in candidates if c is not None]
    tx.accounts.save_sums(
        book.account_id,
        balance=book.balance,
        held=book.held,
        sweep_due_at=min(present) if present else None,
    )
