"""Subscription allowances: which plan a billing period grants, each allowance period granted
once under the plan's renewal policy, upgrades, the end of a subscription, and the monthly drops
of yearly plans (DESIGN §1, §4.4).

Every function here runs inside the caller's transaction, under the account's lock (OpenBook).

Rules that keep the outcome independent of event order:
- A billing period grants the richest plan seen for it (billing_periods keeps the maximum), so
  an upgrade counts at once and a downgrade waits for the next period.
- An allowance period is granted once (its allowance_periods row). One paid after a later
  period started is a late period: RESET grants nothing (in order, its credits would have been
  reset away); ADD grants its credits; ROLLOVER adds what it would have carried, up to the cap.
- An ended subscription grants nothing more; what was left of a RESET or ROLLOVER allowance
  was voided when it ended.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from functools import partial

from billing_service.domain.catalog import Plan, RenewalPolicy, renew
from billing_service.domain.errors import DomainError, NotFound
from billing_service.domain.model import Bucket, EntryContext, GrantSource, GrantStatus
from billing_service.domain.stripe_events import StripeEvent
from billing_service.domain.subscriptions import (
    GRANTING,
    AllowancePeriod,
    Subscription,
    add_months,
    month_window,
)
from billing_service.service_layer.books import OpenBook, open_book, save_book
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.unit_of_work import Tx

log = logging.getLogger(__name__)

ALLOWANCE_SOURCES = frozenset({GrantSource.SUBSCRIPTION, GrantSource.ROLLOVER})
SUBSCRIPTION_KEY = "stripe_subscription"
PERIOD_KEY = "allowance_period_start"


def plan_or_none(tx: Tx, plan_id: str) -> Plan | None:
    """A plan of the catalog by id."""
    item = tx.catalog.get(plan_id) if plan_id else None
    return item if isinstance(item, Plan) else None


def see_plan(
    tx: Tx, subscription: Subscription, plan: Plan, billing_start: datetime | None, now: datetime
) -> None:
    """Remember that `plan` was seen for the billing period starting at billing_start."""
    if billing_start is None:
        return
    seen_id = tx.subscriptions.plan_seen(subscription.id, billing_start)
    seen = plan_or_none(tx, seen_id) if seen_id else None
    if seen is not None and _richer_or_same(seen, plan):
        return
    tx.subscriptions.see_plan(subscription.id, billing_start, plan.id, new=seen_id is None, now=now)


def _richer_or_same(first: Plan, second: Plan) -> bool:
    """Whether first grants at least as much as second (ties go to the smaller id)."""
    return (first.monthly_credits, second.id) >= (second.monthly_credits, first.id)


def plan_for_period(
    tx: Tx, subscription: Subscription, billing_start: datetime | None
) -> Plan | None:
    """The plan a billing period grants: the richest seen for it, else Stripe's current one."""
    seen = tx.subscriptions.plan_seen(subscription.id, billing_start) if billing_start else None
    return plan_or_none(tx, seen or subscription.stripe_plan_id)


def is_allowance_of(bucket: Bucket, subscription_id: str) -> bool:
    """Whether the bucket is one of the subscription's active allowance buckets (its own or
    carried-over credits)."""
    return (
        bucket.source in ALLOWANCE_SOURCES
        and bucket.status is GrantStatus.ACTIVE
        and bucket.metadata.get(SUBSCRIPTION_KEY) == subscription_id
    )


def allowance_buckets(opened: OpenBook, subscription_id: str) -> list[Bucket]:
    """The subscription's active allowance buckets (its own and carried-over credits)."""
    return [b for b in opened.book.buckets.values() if is_allowance_of(b, subscription_id)]


def pay_period(
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    *,
    start: datetime,
    end: datetime,
    event: StripeEvent,
    now: datetime,
) -> tuple[Subscription, tuple[str, ...]]:
    """A billing period was paid: grant its first monthly allowance; a yearly plan's other
    months follow from the scheduler (grant_due_allowances)."""
    if subscription.current_period_start is None or start >= subscription.current_period_start:
        subscription = replace(subscription, current_period_start=start, current_period_end=end)
    window_end = min(add_months(start, 1), end)
    subscription = replace(subscription, paid_through=max(end, subscription.paid_through or end))
    if window_end < end and (
        subscription.next_allowance_at is None or subscription.next_allowance_at < window_end
    ):
        subscription = replace(subscription, next_allowance_at=window_end)
    grants = start_period(
        tx,
        opened,
        subscription,
        start=start,
        end=window_end,
        billing_start=start,
        event=event,
        now=now,
    )
    return subscription, grants


def start_period(
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    *,
    start: datetime,
    end: datetime,
    billing_start: datetime,
    event: StripeEvent | None,
    now: datetime,
) -> tuple[str, ...]:
    """Grant one allowance period once, applying the plan's renewal policy to what the
    periods before it left."""
    if tx.subscriptions.period(subscription.id, start) is not None:
        return ()
    plan = plan_for_period(tx, subscription, billing_start)
    if plan is None:
        raise NotFound("CATALOG_ITEM", "plan_id", subscription.stripe_plan_id or "(none)")
    record = partial(
        AllowancePeriod,
        subscription_id=subscription.id,
        period_start=start,
        period_end=end,
        billing_period_start=billing_start,
        plan_id=plan.id,
        created_at=now,
    )
    if subscription.ended_at is not None:
        tx.subscriptions.add_period(record(credits=0, carried=0, granted=False))
        return ()
    latest = tx.subscriptions.latest_period(subscription.id)
    if latest is not None and latest.period_start > start:
        return _late_period(
            tx, opened, subscription, plan, latest=latest, record=record, event=event, now=now
        )
    context = EntryContext(
        idempotency_key=_cause(subscription, start, event), metadata={"reason": "renewal"}
    )
    previous = allowance_buckets(opened, subscription.id)
    renewal = renew(plan, sum(b.unheld for b in previous))
    if renewal.expire or renewal.carry:
        for bucket in previous:
            opened.book.expire_now(bucket.id, context)
    period = record(credits=renewal.grant, carried=renewal.carry, granted=True)
    grants = []
    if renewal.carry:
        grants.append(
            grant_allowance(
                opened,
                subscription,
                plan,
                amount=renewal.carry,
                period=period,
                event=event,
                what="carried over",
                now=now,
                source=GrantSource.ROLLOVER,
            )
        )
    grants.append(
        grant_allowance(
            opened,
            subscription,
            plan,
            amount=renewal.grant,
            period=period,
            event=event,
            what="allowance",
            now=now,
        )
    )
    tx.subscriptions.add_period(period)
    return tuple(g for g in grants if g)


def _late_period(
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    plan: Plan,
    *,
    latest: AllowancePeriod,
    record: partial[AllowancePeriod],
    event: StripeEvent | None,
    now: datetime,
) -> tuple[str, ...]:
    """A period paid after a later one started: add to the later period what delivery in
    order would have left there. The late period's row keeps that contribution (in carried)."""
    amount, source = _late_contribution(plan, latest.carried)
    tx.subscriptions.add_period(record(credits=plan.monthly_credits, carried=amount, granted=False))
    return _add_to_later(tx, opened, subscription, plan, latest, amount, source, event, now)


def _late_contribution(plan: Plan, carried: int) -> tuple[int, GrantSource]:
    """What a late period adds to the later period that already carried `carried`: nothing
    for RESET (in order it would have been reset away), its credits for ADD, and for ROLLOVER
    the growth of the capped carry: min(carried + credits, cap) - carried, since the later
    period carried min(left, cap) = carried."""
    if plan.renewal_policy is RenewalPolicy.ADD:
        return plan.monthly_credits, GrantSource.SUBSCRIPTION
    if plan.renewal_policy is RenewalPolicy.ROLLOVER:
        cap = plan.monthly_credits if plan.rollover_cap is None else plan.rollover_cap
        return max(0, min(carried + plan.monthly_credits, cap) - carried), GrantSource.ROLLOVER
    return 0, GrantSource.SUBSCRIPTION


def _add_to_later(  # noqa: PLR0917 - the parts of one late contribution
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    plan: Plan,
    later: AllowancePeriod,
    amount: int,
    source: GrantSource,
    event: StripeEvent | None,
    now: datetime,
) -> tuple[str, ...]:
    if amount <= 0:
        return ()
    if source is GrantSource.ROLLOVER:
        tx.subscriptions.add_carried(later, amount)
    granted = grant_allowance(
        opened,
        subscription,
        plan,
        amount=amount,
        period=later,
        event=event,
        what="paid late",
        now=now,
        source=source,
    )
    return (granted,) if granted else ()


def raise_for_upgrade(
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    *,
    billing_start: datetime | None,
    event: StripeEvent,
    now: datetime,
) -> tuple[str, ...]:
    """Grant at once the difference an upgrade makes to a billing period's allowance in force,
    and let that allowance's credits follow the richer plan's renewal policy."""
    if billing_start is None or subscription.ended_at is not None:
        return ()
    current = tx.subscriptions.latest_period(subscription.id, billing_period_start=billing_start)
    richest = plan_for_period(tx, subscription, billing_start)
    if current is None or richest is None or richest.monthly_credits <= current.credits:
        return ()
    if not current.granted:
        return _raise_late(tx, opened, subscription, richest, current, event, now)
    granted = grant_allowance(
        opened,
        subscription,
        richest,
        amount=richest.monthly_credits - current.credits,
        period=current,
        event=event,
        what=f"upgrade to {richest.name}",
        now=now,
    )
    tx.subscriptions.raise_period(current, plan_id=richest.id, credits=richest.monthly_credits)
    # Whichever plan granted them, the period's credits now expire as the richer plan says,
    # so the same events in any order leave the same expiries.
    expires = current.period_end if richest.renewal_policy is RenewalPolicy.RESET else None
    if expires is None or expires > now:
        for live in allowance_buckets(opened, subscription.id):
            if live.metadata.get(PERIOD_KEY) == current.period_start.isoformat():
                opened.book.set_expiry(live.id, expires)
    return (granted,) if granted else ()


def _raise_late(  # noqa: PLR0917 - the parts of one late upgrade
    tx: Tx,
    opened: OpenBook,
    subscription: Subscription,
    richest: Plan,
    late: AllowancePeriod,
    event: StripeEvent,
    now: datetime,
) -> tuple[str, ...]:
    """An upgrade of a period that was paid late: grow its contribution to the later period
    to what the richer plan would have left there."""
    later = tx.subscriptions.latest_period(subscription.id)
    if later is None or later.period_start <= late.period_start:
        return ()
    amount, source = _late_contribution(richest, later.carried - late.carried)
    extra = amount - late.carried
    tx.subscriptions.raise_period(
        late, plan_id=richest.id, credits=richest.monthly_credits, carried=max(amount, late.carried)
    )
    return _add_to_later(tx, opened, subscription, richest, later, extra, source, event, now)


def end_allowance(tx: Tx, opened: OpenBook, subscription: Subscription, event: StripeEvent) -> None:
    """A subscription ended: what is left of its RESET or ROLLOVER allowance goes with it."""
    plan = plan_for_period(tx, subscription, subscription.current_period_start)
    if plan is not None and plan.renewal_policy is RenewalPolicy.ADD:
        return
    context = EntryContext(
        idempotency_key=f"stripe:{event.event_id}", metadata={"reason": "subscription ended"}
    )
    for bucket in allowance_buckets(opened, subscription.id):
        opened.book.void(bucket.id, context)


def resume_drops(tx: Tx, subscription: Subscription, now: datetime) -> Subscription:
    """A yearly plan back in a granting status (e.g. unpaid → active) picks up its monthly
    allowances again from the month in progress, if that month was not granted yet."""
    anchor, paid_through = subscription.current_period_start, subscription.paid_through
    if (
        subscription.status not in GRANTING
        or subscription.next_allowance_at is not None
        or anchor is None
        or paid_through is None
        or not anchor <= now < paid_through
    ):
        return subscription
    start, _ = month_window(anchor, now, paid_through)
    if tx.subscriptions.period(subscription.id, start) is not None:
        start, _ = month_window(anchor, add_months(start, 1), paid_through)
        if start >= paid_through:
            return subscription
    return replace(subscription, next_allowance_at=start)


def _cause(subscription: Subscription, period_start: datetime, event: StripeEvent | None) -> str:
    """What an allowance's ledger entries record as their cause: the Stripe event, or for a
    scheduled monthly drop the subscription and the period's start."""
    if event is not None:
        return f"stripe:{event.event_id}"
    return f"allowance:{subscription.id}:{period_start.isoformat()}"


def grant_allowance(
    opened: OpenBook,
    subscription: Subscription,
    plan: Plan,
    *,
    amount: int,
    period: AllowancePeriod,
    event: StripeEvent | None,
    what: str,
    now: datetime,
    source: GrantSource = GrantSource.SUBSCRIPTION,
) -> str:
    """Grant allowance credits for a period; RESET credits expire at the period's end, so a
    period that is already over grants nothing ("" instead of a grant id)."""
    expires = period.period_end if plan.renewal_policy is RenewalPolicy.RESET else None
    if expires is not None and expires <= now:
        return ""
    bucket, _ = opened.book.grant(
        source=source,
        amount=amount,
        priority=None,
        effective_at=None,
        expires_at=expires,
        description=f"{plan.name}: {what}",
        metadata={
            SUBSCRIPTION_KEY: subscription.id,
            PERIOD_KEY: period.period_start.isoformat(),
            "plan_id": plan.id,
        },
        context=EntryContext(
            idempotency_key=_cause(subscription, period.period_start, event),
            metadata={"reason": what},
        ),
    )
    return bucket.id


# -- yearly plans ------------------------------------------------------------------------


def grant_due_allowances(ctx: AppContext, *, limit: int = 100) -> int:
    """Grant the monthly allowances of yearly plans that fell due; returns how many.

    Safe on many replicas at once: each subscription is re-read under its account's lock and
    its row lock, and an allowance period is granted once (its row's primary key). One that
    cannot be granted is logged and retried next pass without holding up the others.
    """
    now = ctx.clock.now()
    due = ctx.db.read(lambda tx: tx.subscriptions.due_allowances(now, limit))
    granted = 0
    for subscription_id, account_id in due:
        try:
            if ctx.db.write(
                partial(_drop, subscription_id=subscription_id, account_id=account_id, now=now)
            ):
                granted += 1
        except DomainError as error:
            log.error(
                "monthly allowance of %s not granted: %s",
                subscription_id,
                error.message,
                extra={"subscription_id": subscription_id, "reason": error.reason},
            )
    return granted


def _drop(tx: Tx, *, subscription_id: str, account_id: str, now: datetime) -> bool:
    opened = open_book(tx, account_id, now)
    subscription = tx.subscriptions.get(subscription_id, lock=True)
    due = subscription.next_allowance_at if subscription else None
    if subscription is None or due is None or due > now:
        save_book(tx, opened)
        return False
    paid_through = subscription.paid_through
    anchor = subscription.current_period_start
    next_at: datetime | None = None
    started = False
    if (
        paid_through is not None
        and anchor is not None
        and due < paid_through
        and subscription.status in GRANTING
    ):
        start, end = month_window(anchor, due, paid_through)
        start_period(
            tx,
            opened,
            subscription,
            start=start,
            end=end,
            billing_start=anchor,
            event=None,
            now=now,
        )
        started = True
        next_at = end if end < paid_through else None
    tx.subscriptions.save(replace(subscription, next_allowance_at=next_at, updated_at=now))
    save_book(tx, opened)
    return started
