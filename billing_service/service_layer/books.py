"""Opening an account's book under its lock, and writing back what an operation changed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from billing_service.db.accounts import LockedAccount
from billing_service.db.flush_reads import FlushReads
from billing_service.domain.book import AccountBook
from billing_service.domain.errors import NotFound
from billing_service.domain.model import Bucket, Reservation, ReservationStatus
from billing_service.service_layer.unit_of_work import Tx


@dataclass
class OpenBook:
    """A locked account, its book, and the holds that expired while it was opened."""

    locked: LockedAccount
    book: AccountBook
    swept: bool
    expired_holds: list[Reservation]
    # The soonest expiry of holds made on this book in this unit of work.
    new_hold_expiry: datetime | None = None

    def note_new_hold(self, expires_at: datetime) -> None:
        """Remember a hold made here, so the account's next sweep is due when it expires."""
        if self.new_hold_expiry is None or expires_at < self.new_hold_expiry:
            self.new_hold_expiry = expires_at


def open_book(tx: Tx, account_id: str, now: datetime) -> OpenBook:
    """Lock the account and bring its book up to now.

    Time-driven changes (pending grants taking effect, buckets and holds expiring) are applied
    here, before any operation, so every operation sees the balance as of now and writes the
    entries that explain it. The sweeper job does the same for accounts nobody touches.
    """
    locked = tx.accounts.lock(account_id)
    if locked is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    return _opened(tx, locked, tx.buckets.live(account_id), now)


def open_books(tx: Tx, read: FlushReads, now: datetime) -> dict[str, OpenBook]:
    """open_book for the accounts a flush locked and read (flush_reads); accounts that do
    not exist are left out."""
    return {
        account_id: _opened(tx, locked, read.live[account_id], now)
        for account_id, locked in read.locked.items()
    }


def _opened(tx: Tx, locked: LockedAccount, buckets: list[Bucket], now: datetime) -> OpenBook:
    account_id = locked.account.id
    book = AccountBook(
        account_id,
        balance=locked.balance,
        held=locked.held,
        buckets=buckets,
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


def save_book(tx: Tx, opened: OpenBook) -> None:
    """Write the book's changes: buckets, entries, expired holds and the account's sums."""
    book = opened.book
    tx.buckets.add(book.created_buckets())
    tx.buckets.save(book.changed_buckets())
    if book.expiry_changed_ids:
        tx.buckets.save_expiries(book.changed_expiries())
    tx.ledger.append(book.new_entries)
    for hold in opened.expired_holds:
        tx.reservations.save(hold)
    sums = _changed_sums(tx, opened)
    if sums is not None:
        tx.accounts.save_sums(book.account_id, balance=sums[1], held=sums[2], sweep_due_at=sums[3])


def save_books(tx: Tx, books: list[OpenBook]) -> None:
    """save_book for several books, each kind of write batched across them."""
    tx.buckets.add([b for o in books for b in o.book.created_buckets()])
    tx.buckets.save([b for o in books for b in o.book.changed_buckets()])
    tx.buckets.save_expiries([b for o in books for b in o.book.changed_expiries()])
    tx.ledger.append([e for o in books for e in o.book.new_entries])
    for opened in books:
        for hold in opened.expired_holds:
            tx.reservations.save(hold)
    changed = (_changed_sums(tx, o) for o in books)
    tx.accounts.save_sums_many([sums for sums in changed if sums is not None])


def _changed_sums(tx: Tx, opened: OpenBook) -> tuple[str, int, int, datetime | None] | None:
    """The account's new (id, balance, held, sweep_due_at), or None when they are what the
    lock read: a flush of replays and refusals writes no row."""
    book, locked = opened.book, opened.locked
    due = _next_sweep(tx, opened)
    if (book.balance, book.held, due) == (locked.balance, locked.held, locked.sweep_due_at):
        return None
    return book.account_id, book.balance, book.held, due


def _next_sweep(tx: Tx, opened: OpenBook) -> datetime | None:
    """When the account next has a time-driven change (a grant or hold due), if ever."""
    book = opened.book
    candidates = [book.next_event_at(), opened.new_hold_expiry]
    if opened.swept:
        candidates.append(tx.reservations.next_expiry(book.account_id))
    else:
        # Not yet due: it still stands for whatever hold or bucket event set it.
        candidates.append(opened.locked.sweep_due_at)
    present = [c for c in candidates if c is not None]
    return min(present) if present else None
