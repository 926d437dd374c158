"""What Creditline records about payments: the credit packages it offered in Checkout
sessions, those bought, and the disputes of their charges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing_service.domain.stripe_events import DisputeState


@dataclass(frozen=True)
class CheckoutOffer:
    """What CreateCheckoutSession sold in one Checkout session: its completion grants exactly
    this. Keyed by the session id Stripe assigned, which no one can forge into an event."""

    checkout_session_id: str
    account_id: str
    package_id: str
    credits: int
    stripe_price_id: str
    created_at: datetime


@dataclass(frozen=True)
class Purchase:
    """A credit package bought through one Checkout session."""

    checkout_session_id: str
    account_id: str
    package_id: str
    credits: int
    grant_id: str
    payment_intent_id: str
    amount_total: int
    currency: str
    refunded_amount: int
    clawed_back: int
    created_at: datetime


@dataclass(frozen=True)
class Dispute:
    """A dispute of a purchase's charge."""

    id: str
    account_id: str
    payment_intent_id: str
    charge_id: str
    state: DisputeState
    state_event_at: datetime
    created_at: datetime
    updated_at: datetime
