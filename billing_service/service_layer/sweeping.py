"""The time-driven work nobody's call triggers: holds expiring, buckets expiring, pending
grants taking effect, on accounts that no request touches; and idempotency records past their
retention deleted.

Safe on many replicas at once: each account is swept under its own row lock, and a sweep that
finds nothing due changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from billing_service.service_layer.books import open_book, save_book
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.unit_of_work import Tx


def sweep_due_accounts(ctx: AppContext, *, batch: int = 100) -> int:
    """Apply due time-driven changes to up to `batch` accounts; returns how many were swept."""
    now = ctx.clock.now()
    due = ctx.db.read(lambda tx: tx.accounts.due_for_sweep(now, batch))
    for account_id in due:

        def sweep(tx: Tx, account_id: str = account_id) -> None:
            save_book(tx, open_book(tx, account_id, now))

        ctx.db.write(sweep)
    return len(due)


def prune_idempotency_records(ctx: AppContext, *, retention: timedelta, batch: int = 1000) -> int:
    """Delete up to `batch` idempotency records older than retention, in one short
    transaction; returns how many were deleted.

    A key whose record is gone is a new key: a retry that late would be applied again. So the
    retention must outlast every retry a caller makes (Stripe's own keys last 24 hours). Stripe
    events stay safe whatever it is: each is also recorded by event id, kept for good.
    """
    if retention <= timedelta(0):
        raise ValueError("retention must be positive")
    cutoff = ctx.clock.now() - retention
    return ctx.db.write(lambda tx: tx.idempotency.delete_older_than(cutoff, batch))
