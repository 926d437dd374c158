"""Stripe events as the use cases receive them: the webhook gateway's translation of Stripe's
wire format, reduced to the fields Creditline acts on. Amounts of money are integer minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from billing_service.domain.subscriptions import SubscriptionStatus


class DisputeState(StrEnum):
    """Where a dispute is."""

    OPEN = "OPEN"
    WON = "WON"
    LOST = "LOST"


class EventOutcome(StrEnum):
    """What applying an event did."""

    APPLIED = "APPLIED"
    IGNORED = "IGNORED"
    STALE = "STALE"


@dataclass(frozen=True)
class CheckoutCompleted:
    """A Checkout session finished (its payment may still be pending)."""

    session_id: str
    mode: str
    payment_status: str
    customer_id: str
    account_id: str
    package_id: str
    plan_id: str
    payment_intent_id: str
    subscription_id: str
    amount_total: int
    currency: str
    # The credits the session's metadata names (micro-credits), None if it names none. Only
    # compared with what was sold: the grant comes from the offer recorded at
    # CreateCheckoutSession, never from metadata.
    package_credits: int | None = None


@dataclass(frozen=True)
class SubscriptionChanged:
    """A subscription's state as of the event."""

    subscription_id: str
    customer_id: str
    account_id: str
    price_id: str
    lookup_key: str
    status: SubscriptionStatus
    period_start: datetime | None
    period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class InvoiceSettled:
    """A subscription invoice was paid, or its payment failed."""

    invoice_id: str
    customer_id: str
    subscription_id: str
    account_id: str
    price_id: str
    lookup_key: str
    period_start: datetime | None
    period_end: datetime | None
    billing_reason: str
    paid: bool
    amount_paid: int
    proration: bool = False


@dataclass(frozen=True)
class PaymentFailed:
    """A payment attempt failed."""

    payment_intent_id: str
    customer_id: str
    account_id: str
    failure_message: str


@dataclass(frozen=True)
class ChargeRefunded:
    """A charge was refunded, in part or in full; amount_refunded is the total so far."""

    charge_id: str
    payment_intent_id: str
    customer_id: str
    amount: int
    amount_refunded: int


@dataclass(frozen=True)
class DisputeChanged:
    """A dispute was opened or closed."""

    dispute_id: str
    charge_id: str
    payment_intent_id: str
    amount: int
    state: DisputeState


Payload = (
    CheckoutCompleted
    | SubscriptionChanged
    | InvoiceSettled
    | PaymentFailed
    | ChargeRefunded
    | DisputeChanged
)


@dataclass(frozen=True)
class StripeEvent:
    """One verified Stripe event."""

    event_id: str
    type: str
    created: datetime
    payload: Payload


@dataclass(frozen=True)
class EventResult:
    """What an event did, kept as the event's record and answered to the gateway."""

    outcome: EventOutcome
    detail: str
    grant_ids: tuple[str, ...] = ()
