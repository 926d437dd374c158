"""Queries for the subscription mirror and its allowance periods."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from billing_service.db.codec import from_micros, opt_from_micros, opt_to_micros, to_micros
from billing_service.db.tables import allowance_periods, billing_periods, subscriptions
from billing_service.domain.subscriptions import (
    AllowancePeriod,
    Subscription,
    SubscriptionStatus,
)

_TIMES = (
    "state_event_at",
    "current_period_start",
    "current_period_end",
    "canceled_at",
    "ended_at",
    "paid_through",
    "next_allowance_at",
)

_PERIOD_TIMES = ("period_start", "period_end", "billing_period_start", "created_at")


class SubscriptionRepository:
    """Reads and writes subscriptions and allowance periods."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def get(self, subscription_id: str, *, lock: bool = False) -> Subscription | None:
        """One subscription; with lock, its row stays locked until the transaction ends."""
        query = select(subscriptions).where(subscriptions.c.id == subscription_id)
        if lock:
            query = query.with_for_update()
        row = self._conn.execute(query).mappings().first()
        return None if row is None else _subscription(row)

    def add(self, subscription: Subscription) -> None:
        """Insert a new subscription."""
        self._conn.execute(insert(subscriptions).values(**_row(subscription)))

    def save(self, subscription: Subscription) -> None:
        """Write every field of a subscription."""
        self._conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == subscription.id)
            .values(**_row(subscription))
        )

    def of_account(self, account_id: str) -> list[Subscription]:
        """An account's subscriptions, newest first."""
        rows = self._conn.execute(
            select(subscriptions)
            .where(subscriptions.c.account_id == account_id)
            .order_by(subscriptions.c.created_at.desc(), subscriptions.c.id)
        ).mappings()
        return [_subscription(row) for row in rows]

    def page(self, *, account_id: str, after: str, limit: int) -> list[Subscription]:
        """Subscriptions by id, after the given id."""
        query = select(subscriptions).order_by(subscriptions.c.id).limit(limit)
        if account_id:
            query = query.where(subscriptions.c.account_id == account_id)
        if after:
            query = query.where(subscriptions.c.id > after)
        return [_subscription(row) for row in self._conn.execute(query).mappings()]

    def due_allowances(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(subscription id, account id) of subscriptions whose next monthly allowance is due."""
        rows = self._conn.execute(
            select(subscriptions.c.id, subscriptions.c.account_id)
            .where(subscriptions.c.next_allowance_at <= to_micros(now))
            .order_by(subscriptions.c.next_allowance_at, subscriptions.c.id)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in rows]

    def any_frozen(self, account_id: str) -> bool:
        """Whether any of an account's subscriptions has its allowance frozen."""
        row = self._conn.execute(
            select(subscriptions.c.id)
            .where(subscriptions.c.account_id == account_id, subscriptions.c.allowance_frozen)
            .limit(1)
        ).first()
        return row is not None

    def period(self, subscription_id: str, start: datetime) -> AllowancePeriod | None:
        """The allowance period starting at start, if it was granted."""
        row = (
            self._conn.execute(
                select(allowance_periods).where(
                    allowance_periods.c.subscription_id == subscription_id,
                    allowance_periods.c.period_start == to_micros(start),
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else _period(row)

    def latest_period(
        self, subscription_id: str, *, billing_period_start: datetime | None = None
    ) -> AllowancePeriod | None:
        """The newest allowance period of a subscription, or of one of its billing periods."""
        query = select(allowance_periods).where(
            allowance_periods.c.subscription_id == subscription_id
        )
        if billing_period_start is not None:
            query = query.where(
                allowance_periods.c.billing_period_start == to_micros(billing_period_start)
            )
        row = (
            self._conn.execute(query.order_by(allowance_periods.c.period_start.desc()).limit(1))
            .mappings()
            .first()
        )
        return None if row is None else _period(row)

    def add_period(self, period: AllowancePeriod) -> None:
        """Record an allowance period (its primary key refuses a second grant)."""
        values = asdict(period)
        for name in _PERIOD_TIMES:
            values[name] = to_micros(values[name])
        self._conn.execute(insert(allowance_periods).values(**values))

    def add_carried(self, period: AllowancePeriod, credits: int) -> None:
        """Record credits carried into a period after it started (a late earlier period)."""
        self._conn.execute(
            update(allowance_periods)
            .where(
                allowance_periods.c.subscription_id == period.subscription_id,
                allowance_periods.c.period_start == to_micros(period.period_start),
            )
            .values(carried=allowance_periods.c.carried + credits)
        )

    def plan_seen(self, subscription_id: str, billing_period_start: datetime) -> str | None:
        """The richest plan seen so far for a billing period."""
        row = self._conn.execute(
            select(billing_periods.c.plan_id).where(
                billing_periods.c.subscription_id == subscription_id,
                billing_periods.c.period_start == to_micros(billing_period_start),
            )
        ).first()
        return None if row is None else str(row[0])

    def see_plan(
        self,
        subscription_id: str,
        billing_period_start: datetime,
        plan_id: str,
        *,
        new: bool,
        now: datetime,
    ) -> None:
        """Record the richest plan seen for a billing period."""
        if new:
            self._conn.execute(
                insert(billing_periods).values(
                    subscription_id=subscription_id,
                    period_start=to_micros(billing_period_start),
                    plan_id=plan_id,
                    updated_at=to_micros(now),
                )
            )
            return
        self._conn.execute(
            update(billing_periods)
            .where(
                billing_periods.c.subscription_id == subscription_id,
                billing_periods.c.period_start == to_micros(billing_period_start),
            )
            .values(plan_id=plan_id, updated_at=to_micros(now))
        )

    def raise_period(
        self, period: AllowancePeriod, *, plan_id: str, credits: int, carried: int | None = None
    ) -> None:
        """Record that an upgrade raised a period's allowance (and, for a late period, what it
        now adds to the period after it)."""
        values: dict[str, object] = {"plan_id": plan_id, "credits": credits}
        if carried is not None:
            values["carried"] = carried
        self._conn.execute(
            update(allowance_periods)
            .where(
                allowance_periods.c.subscription_id == period.subscription_id,
                allowance_periods.c.period_start == to_micros(period.period_start),
            )
            .values(**values)
        )


def _row(subscription: Subscription) -> dict[str, Any]:
    values = asdict(subscription)
    values["status"] = subscription.status.value
    for name in (*_TIMES, "created_at", "updated_at"):
        values[name] = opt_to_micros(values[name])
    return values


def _subscription(row: Any) -> Subscription:
    values = dict(row)
    values["status"] = SubscriptionStatus(values["status"])
    values["cancel_at_period_end"] = bool(values["cancel_at_period_end"])
    values["allowance_frozen"] = bool(values["allowance_frozen"])
    for name in _TIMES:
        values[name] = opt_from_micros(values[name])
    values["created_at"] = from_micros(values["created_at"])
    values["updated_at"] = from_micros(values["updated_at"])
    return Subscription(**values)


def _period(row: Any) -> AllowancePeriod:
    values = dict(row)
    for name in _PERIOD_TIMES:
        values[name] = from_micros(values[name])
    values["granted"] = bool(values["granted"])
    return AllowancePeriod(**values)
