"""The Stripe client built from settings, and StripeBilling: the StripePort the use cases call,
over the official `stripe` package.

One `stripe.StripeClient` instance per process, built from the settings and passed down; the
global `stripe.api_key` is never set. Every call that creates something carries the caller's
idempotency key, so a retry (ours, or the library's own network retries) creates it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import stripe
from stripe.params.checkout import SessionCreateParams

from billing_service.service_layer.ports import CheckoutSession
from billing_service.settings import Settings
from billing_service.stripe.errors import translated


def build_stripe_client(settings: Settings) -> stripe.StripeClient | None:
    """A client for the configured Stripe account, or None when no secret key is set."""
    if not settings.stripe_secret_key:
        return None
    return stripe.StripeClient(
        settings.stripe_secret_key,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=settings.stripe_max_network_retries,
    )


class StripeBilling:
    """The StripePort over a StripeClient: customers, Checkout and the customer portal.

    Raises StripeUnavailable when Stripe cannot be reached or fails, FailedPrecondition
    (STRIPE_REQUEST_REJECTED, STRIPE_AUTHENTICATION_FAILED) when it refuses the request.
    """

    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    def create_customer(
        self, *, account_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        """Create a Stripe customer for an account; returns its id ("cus_…")."""
        with translated("creating a customer"):
            customer = self._client.v1.customers.create(
                params={"metadata": {**metadata, "account_id": account_id}},
                options={"idempotency_key": idempotency_key},
            )
        return customer.id

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

        The metadata goes on the session and also on the payment intent (mode payment) or the
        subscription (mode subscription), so the events about either carry it.
        """
        tags = dict(metadata)
        params: SessionCreateParams = {
            "mode": mode,
            "customer": customer_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": tags,
        }
        if "account_id" in tags:
            params["client_reference_id"] = tags["account_id"]
        if mode == "payment":
            params["payment_intent_data"] = {"metadata": tags}
        else:
            params["subscription_data"] = {"metadata": tags}
        with translated("creating a Checkout session"):
            session = self._client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        return CheckoutSession(id=session.id, url=session.url or "")

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        """Create a customer portal session; returns its URL."""
        with translated("creating a customer portal session"):
            session = self._client.v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url}
            )
        return session.url
