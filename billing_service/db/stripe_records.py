"""Queries for what Creditline sold through Stripe and what Stripe told us: Checkout offers,
package purchases, disputes and processed events."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from billing_service.db.codec import from_micros, to_micros
from billing_service.db.tables import (
    checkout_offers,
    disputes,
    parked_payment_events,
    purchases,
    stripe_events,
)
from billing_service.domain.purchases import CheckoutOffer, Dispute, Purchase
from billing_service.domain.stripe_events import DisputeState, EventOutcome, EventResult


class StripeRecordRepository:
    """Reads and writes Checkout offers, purchases, disputes and processed Stripe events."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def checkout_offer(self, checkout_session_id: str) -> CheckoutOffer | None:
        """What a Checkout session Creditline created was created to sell."""
        row = (
            self._conn.execute(
                select(checkout_offers).where(
                    checkout_offers.c.checkout_session_id == checkout_session_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        values = dict(row)
        values["created_at"] = from_micros(values["created_at"])
        return CheckoutOffer(**values)

    def add_checkout_offer(self, offer: CheckoutOffer) -> None:
        """Record an offer (its primary key refuses a second one per session)."""
        values = asdict(offer)
        values["created_at"] = to_micros(offer.created_at)
        self._conn.execute(insert(checkout_offers).values(**values))

    def purchase(self, checkout_session_id: str) -> Purchase | None:
        """The purchase made through a Checkout session."""
        row = (
            self._conn.execute(
                select(purchases).where(purchases.c.checkout_session_id == checkout_session_id)
            )
            .mappings()
            .first()
        )
        return None if row is None else _purchase(row)

    def purchase_by_payment_intent(self, payment_intent_id: str) -> Purchase | None:
        """The purchase paid by a payment intent."""
        if not payment_intent_id:
            return None
        row = (
            self._conn.execute(
                select(purchases).where(purchases.c.payment_intent_id == payment_intent_id)
            )
            .mappings()
            .first()
        )
        return None if row is None else _purchase(row)

    def add_purchase(self, purchase: Purchase) -> None:
        """Record a purchase (its primary key refuses a second one per session)."""
        values = asdict(purchase)
        values["created_at"] = to_micros(purchase.created_at)
        self._conn.execute(insert(purchases).values(**values))

    def save_refund(self, session_id: str, *, refunded_amount: int, clawed_back: int) -> None:
        """Record the refunded total seen so far and the credits clawed back."""
        self._conn.execute(
            update(purchases)
            .where(purchases.c.checkout_session_id == session_id)
            .values(refunded_amount=refunded_amount, clawed_back=clawed_back)
        )

    def dispute(self, dispute_id: str) -> Dispute | None:
        """One dispute."""
        row = self._conn.execute(select(disputes).where(disputes.c.id == dispute_id)).first()
        if row is None:
            return None
        m = row._mapping
        return Dispute(
            id=m["id"],
            account_id=m["account_id"],
            payment_intent_id=m["payment_intent_id"],
            charge_id=m["charge_id"],
            state=DisputeState(m["state"]),
            state_event_at=from_micros(m["state_event_at"]),
            created_at=from_micros(m["created_at"]),
            updated_at=from_micros(m["updated_at"]),
        )

    def put_dispute(self, dispute: Dispute, *, new: bool) -> None:
        """Insert or update a dispute."""
        values = asdict(dispute)
        values["state"] = dispute.state.value
        for name in ("state_event_at", "created_at", "updated_at"):
            values[name] = to_micros(values[name])
        if new:
            self._conn.execute(insert(disputes).values(**values))
        else:
            self._conn.execute(update(disputes).where(disputes.c.id == dispute.id).values(**values))

    def lock_payment(self, payment_intent_id: str) -> None:
        """Hold the right to read and change what is recorded about one payment (its purchase,
        refunds, disputes, parked events) until the transaction ends.

        Taken before the account lock by every event about a payment, so two refunds of one
        charge, or a refund racing its purchase, take turns: an advisory lock on PostgreSQL,
        the single writer lock on SQLite.
        """
        if payment_intent_id and self._conn.dialect.name == "postgresql":
            self._conn.execute(
                select(func.pg_advisory_xact_lock(func.hashtextextended(payment_intent_id, 0)))
            )

    def any_open_dispute(self, account_id: str) -> bool:
        """Whether an account has a dispute still open."""
        row = self._conn.execute(
            select(disputes.c.id)
            .where(disputes.c.account_id == account_id, disputes.c.state == DisputeState.OPEN)
            .limit(1)
        ).first()
        return row is not None

    def park(self, event_id: str, payment_intent_id: str, event: str, now: datetime) -> None:
        """Keep an event about a payment whose purchase has not arrived yet."""
        self._conn.execute(
            insert(parked_payment_events).values(
                event_id=event_id,
                payment_intent_id=payment_intent_id,
                event=event,
                created_at=to_micros(now),
            )
        )

    def unpark(self, payment_intent_id: str) -> list[str]:
        """Take the events parked for a payment, oldest first, removing them."""
        rows = self._conn.execute(
            select(parked_payment_events.c.event)
            .where(parked_payment_events.c.payment_intent_id == payment_intent_id)
            .order_by(parked_payment_events.c.created_at, parked_payment_events.c.event_id)
        ).all()
        self._conn.execute(
            delete(parked_payment_events).where(
                parked_payment_events.c.payment_intent_id == payment_intent_id
            )
        )
        return [row[0] for row in rows]

    def event(self, event_id: str) -> EventResult | None:
        """What a processed event did, or None if it was never applied."""
        row = self._conn.execute(
            select(stripe_events.c.outcome, stripe_events.c.detail).where(
                stripe_events.c.event_id == event_id
            )
        ).first()
        return None if row is None else EventResult(EventOutcome(row[0]), row[1])

    def add_event(
        self, event_id: str, event_type: str, created: datetime, result: EventResult, now: datetime
    ) -> None:
        """Record an applied event (its primary key refuses a second application)."""
        self._conn.execute(
            insert(stripe_events).values(
                event_id=event_id,
                type=event_type,
                created_at=to_micros(created),
                outcome=result.outcome.value,
                detail=result.detail,
                applied_at=to_micros(now),
            )
        )


def _purchase(row: Any) -> Purchase:
    values = dict(row)
    values["created_at"] = from_micros(values["created_at"])
    return Purchase(**values)
