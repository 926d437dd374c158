"""Read-only use cases: balances, grants, holds and ledger pages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from billing_service.db.accounts import Sums
from billing_service.db.buckets import cursor_of as bucket_cursor
from billing_service.db.reservations import cursor_of as reservation_cursor
from billing_service.domain.errors import InvalidField, NotFound
from billing_service.domain.model import (
    BalanceView,
    Bucket,
    EntryKind,
    GrantSource,
    GrantStatus,
    LedgerEntry,
    Reservation,
    ReservationStatus,
)
from billing_service.domain.validation import check_id
from billing_service.service_layer.books import open_book, save_book
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.pagination import Page, decode_token, encode_token, page_size
from billing_service.service_layer.unit_of_work import Tx


def get_balance(ctx: AppContext, account_id: str) -> BalanceView:
    """The account's balance now, with the buckets that make it up in drain order.

    A plain read, unless a time-driven change (expiry, a grant taking effect) is due: then the
    change is applied and written first, so the balance shown is always the ledger's sum.
    """
    check_id(account_id, "account_id")
    now = ctx.clock.now()
    # Read after `now` is taken: a change due by now is never missed below.
    found = ctx.reads.sums_and_live(ctx.db, account_id)
    view = _balance_read(account_id, found, now)
    return view if view is not None else _sweep_then_read(ctx, account_id, now)


async def get_balance_async(ctx: AppContext, account_id: str) -> BalanceView:
    """get_balance, for a coroutine: the reads and writes run off the event loop."""
    check_id(account_id, "account_id")
    now = ctx.clock.now()
    found = await ctx.reads.sums_and_live_async(ctx.db, account_id)
    view = _balance_read(account_id, found, now)
    if view is None:
        view = await asyncio.to_thread(_sweep_then_read, ctx, account_id, now)
    return view


def _balance_read(
    account_id: str, found: tuple[Sums, list[Bucket]] | None, now: datetime
) -> BalanceView | None:
    """The balance as read, or None when a time-driven change is due and must be written."""
    if found is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    sums, live = found
    if sums.sweep_due_at is None or sums.sweep_due_at > now:
        return _view(account_id, sums.balance, sums.held, live, now, sums.frozen_sources)
    return None


def _sweep_then_read(ctx: AppContext, account_id: str, now: datetime) -> BalanceView:
    def work(tx: Tx) -> BalanceView:
        opened = open_book(tx, account_id, now)
        save_book(tx, opened)
        book = opened.book
        return _view(
            account_id, book.balance, book.held, book.buckets.values(), now, book.frozen_sources
        )

    return ctx.db.write(work)


def _view(  # noqa: PLR0917 - the parts of one balance, named at every call
    account_id: str,
    balance: int,
    held: int,
    buckets: Iterable[Bucket],
    now: datetime,
    frozen_sources: frozenset[GrantSource],
) -> BalanceView:
    live = sorted(
        # Closed (expired, voided) buckets still count while a hold claims part of them.
        (b for b in buckets if b.status is not GrantStatus.PENDING and b.remaining > 0),
        key=Bucket.drain_key,
    )
    frozen = sum(
        b.unheld for b in live if b.source in frozen_sources and b.status is GrantStatus.ACTIVE
    )
    return BalanceView(
        account_id=account_id,
        balance=balance,
        held=held,
        available=balance - held - frozen,
        buckets=tuple(live),
        as_of=now,
        frozen=frozen,
    )


def get_reservation(ctx: AppContext, reservation_id: str) -> Reservation:
    """One hold."""
    check_id(reservation_id, "reservation_id")
    hold = ctx.db.read(lambda tx: tx.reservations.get(reservation_id))
    if hold is None:
        raise NotFound("RESERVATION", "reservation_id", reservation_id)
    return hold


def list_grants(
    ctx: AppContext,
    *,
    account_id: str,
    size: int,
    token: str,
    statuses: Sequence[GrantStatus],
) -> Page[Bucket]:
    """A page of an account's grants, newest first."""
    check_id(account_id, "account_id")
    limit = page_size(size)
    filters = {"account": account_id, "statuses": sorted(statuses)}
    before = _pair(decode_token(token, filters))

    def read(tx: Tx) -> list[Bucket]:
        _require_account(tx, account_id)
        return tx.buckets.page(account_id, before=before, limit=limit + 1, statuses=statuses)

    rows = ctx.db.read(read)
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_token(bucket_cursor(items[-1]), filters) if more else "")


def list_reservations(
    ctx: AppContext,
    *,
    account_id: str,
    size: int,
    token: str,
    statuses: Sequence[ReservationStatus],
) -> Page[Reservation]:
    """A page of an account's holds, newest first."""
    check_id(account_id, "account_id")
    limit = page_size(size)
    filters = {"account": account_id, "statuses": sorted(statuses)}
    before = _pair(decode_token(token, filters))

    def read(tx: Tx) -> list[Reservation]:
        _require_account(tx, account_id)
        return tx.reservations.page(account_id, before=before, limit=limit + 1, statuses=statuses)

    rows = ctx.db.read(read)
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_token(reservation_cursor(items[-1]), filters) if more else "")


def list_ledger_entries(
    ctx: AppContext,
    *,
    account_id: str,
    size: int,
    token: str,
    start: datetime | None,
    end: datetime | None,
    kinds: Sequence[EntryKind],
    feature: str,
) -> Page[LedgerEntry]:
    """A page of an account's ledger, newest first."""
    check_id(account_id, "account_id")
    limit = page_size(size)
    if start and end and end <= start:
        raise InvalidField("end_time", "must be later than start_time")
    filters = {
        "account": account_id,
        "start": start.isoformat() if start else "",
        "end": end.isoformat() if end else "",
        "kinds": sorted(kinds),
        "feature": feature,
    }
    position = decode_token(token, filters)
    before = _seq(position)

    def read(tx: Tx) -> list[tuple[int, LedgerEntry]]:
        _require_account(tx, account_id)
        return tx.ledger.page(
            account_id,
            before_seq=before,
            limit=limit + 1,
            start=start,
            end=end,
            kinds=kinds,
            feature=feature,
        )

    rows = ctx.db.read(read)
    items = rows[:limit]
    more = len(rows) > limit
    return Page([e for _, e in items], encode_token([items[-1][0]], filters) if more else "")


def _require_account(tx: Tx, account_id: str) -> None:
    if tx.accounts.get_sums(account_id) is None:
        raise NotFound("ACCOUNT", "account_id", account_id)


def _pair(position: list[Any] | None) -> tuple[int, str] | None:
    if position is None:
        return None
    match position:
        case [int(created), str(ident)]:
            return (created, ident)
    raise InvalidField("page_token", "is not a token this service issued")


def _seq(position: list[Any] | None) -> int | None:
    if position is None:
        return None
    match position:
        case [int(seq)]:
            return seq
    raise InvalidField("page_token", "is not a token this service issued")
