"""What the use cases need from Stripe, as a protocol: billing_service.stripe implements it
over the official client, and tests may pass any object with these methods.

Implementations raise domain errors only: StripeUnavailable when Stripe cannot be reached or
fails (the caller may retry with the same key), FailedPrecondition (STRIPE_REQUEST_REJECTED)
when Stripe refuses the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class CheckoutSession:
    """A Checkout session Stripe created: where to send the buyer."""

    id: str
    url: str


class StripePort(Protocol):
    """The calls Creditline makes to Stripe on a caller's behalf."""

    def create_customer(
        self, *, account_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        """Create a Stripe customer for an account; returns its id ("cus_…")."""
        ...

    def create_checkout_session(
        self,
        *,
        customer_id: str,
        price_id: str,
        mode: Literal["payment", "subscription"],
        metadata: Mapping[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutSession:
        """Create a Checkout session for one unit of a price.

        metadata goes on the session, and also on the payment intent (mode payment) or the
        subscription (mode subscription), so later events carry it.
        """
        ...

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        """Create a customer portal session; returns its URL."""
        ...
