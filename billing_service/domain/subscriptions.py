"""Subscriptions as Creditline mirrors them, and the rules that make Stripe's events safe to
apply in any order (DESIGN §4.4).

Ordering: Stripe's state of a subscription (status, period, plan, cancellation) is replaced
only by an event at least as new, compared by (event time, status rank). Stripe stamps events
in whole seconds, so several events of one subscription often share a second; the rank breaks
those ties the way a subscription moves (incomplete → active → past_due → … → canceled), so
`subscription.created` (incomplete) never undoes an `invoice.paid` (active) of the same second.

Plans: an allowance period uses the richest plan seen for the billing period it falls in.
Taking the maximum is what makes an upgrade count at once and a downgrade wait for the next
period, whatever order the events arrive in.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses."""

    INCOMPLETE = "INCOMPLETE"
    INCOMPLETE_EXPIRED = "INCOMPLETE_EXPIRED"
    TRIALING = "TRIALING"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    CANCELED = "CANCELED"
    UNPAID = "UNPAID"
    PAUSED = "PAUSED"


STATUS_RANK: dict[SubscriptionStatus, int] = {
    SubscriptionStatus.INCOMPLETE: 0,
    SubscriptionStatus.TRIALING: 1,
    SubscriptionStatus.ACTIVE: 2,
    SubscriptionStatus.PAST_DUE: 3,
    SubscriptionStatus.PAUSED: 4,
    SubscriptionStatus.UNPAID: 4,
    SubscriptionStatus.INCOMPLETE_EXPIRED: 5,
    SubscriptionStatus.CANCELED: 6,
}

# Statuses in which a paid period's allowance is granted.
GRANTING = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)
# Statuses in which the allowance freezes, when the server is configured to freeze it.
PAYMENT_OVERDUE = frozenset({SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID})


@dataclass(frozen=True)
class Subscription:
    """One Stripe subscription and what Creditline has done for it."""

    id: str
    account_id: str
    stripe_customer_id: str
    stripe_plan_id: str
    status: SubscriptionStatus
    state_event_at: datetime | None
    state_rank: int
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    allowance_frozen: bool
    paid_through: datetime | None
    next_allowance_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def is_newer(self, at: datetime, status: SubscriptionStatus) -> bool:
        """Whether an event at `at` saying `status` may replace the stored state."""
        if self.state_event_at is None:
            return True
        return (at, STATUS_RANK[status]) >= (self.state_event_at, self.state_rank)


@dataclass(frozen=True)
class AllowancePeriod:
    """One granted allowance period: the guard that grants it once."""

    subscription_id: str
    period_start: datetime
    period_end: datetime
    billing_period_start: datetime
    plan_id: str
    credits: int
    carried: int
    granted: bool
    created_at: datetime


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months later, clamped to the month's end
    (31 January + 1 month = 28 or 29 February), as Stripe anchors billing periods."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def month_window(anchor: datetime, at: datetime, limit: datetime) -> tuple[datetime, datetime]:
    """The monthly allowance window, counted from anchor, that starts at `at`, ending at the
    next monthly anchor or at `limit` (the end of the paid period), whichever comes first."""
    k = 0
    while add_months(anchor, k + 1) <= at:
        k += 1
    return add_months(anchor, k), min(add_months(anchor, k + 1), limit)
