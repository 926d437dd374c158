"""Stripe-shaped events for the gateway tests, and the Stripe-Signature header Stripe sends.

The objects follow Stripe's API reference at version 2026-10-28 (the version stripe 16.1.0 pins):
a subscription's current period on its items, an invoice's subscription under
`parent.subscription_details`, a line's price under `pricing.price_details` and its paid-for
period under `period`. They carry the fields Stripe sends that the gateway must ignore (card
details of a failed payment, the invoice's own period) so tests can show they are not forwarded.
Each builder takes keyword overrides of top-level fields.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

API_VERSION = "2026-10-28.endive"
NOV_1 = 1793491200  # 2026-11-01T00:00:00Z
DEC_1 = 1796083200  # 2026-12-01T00:00:00Z
OCT_1 = 1790812800  # 2026-10-01T00:00:00Z

SECRET = "whsec_test_5f1c0a7e9b2d4c6e8f0a1b3c5d7e9f1a"
OTHER_SECRET = "whsec_test_rotated_0b1c2d3e4f5a6b7c8d9e0f1a"


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for body: t=<ts>,v1=hex(HMAC-SHA256(secret, "<ts>.<body>"))."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def encode(event: dict[str, Any]) -> bytes:
    """The body as Stripe sends it: pretty-printed JSON."""
    return json.dumps(event, indent=2).encode()


def event(
    type_: str,
    obj: dict[str, Any],
    *,
    event_id: str = "evt_1SWdGt2eZvKYlo2C0k9mQxRt",
    created: int = NOV_1 + 60,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A v1 snapshot event envelope around obj."""
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_Q9mX2cYb7LkP1a", "idempotency_key": None},
        "type": type_,
    }


def price(**overrides: Any) -> dict[str, Any]:
    """A recurring monthly price with a lookup key."""
    return {
        "id": "price_1SWd0a2eZvKYlo2CStarterM",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": OCT_1,
        "currency": "usd",
        "livemode": False,
        "lookup_key": "starter_monthly",
        "metadata": {},
        "nickname": None,
        "product": "prod_TStarter01",
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "type": "recurring",
        "unit_amount": 2000,
        "unit_amount_decimal": "2000",
        **overrides,
    }


def checkout_session(**overrides: Any) -> dict[str, Any]:
    """A completed, paid Checkout session for a credit package (payment mode)."""
    return {
        "id": "cs_test_a1B2c3D4e5F6g7H8i9J0",
        "object": "checkout.session",
        "amount_subtotal": 5000,
        "amount_total": 5000,
        "billing_address_collection": None,
        "cancel_url": "https://app.example.com/billing",
        "client_reference_id": "acct_42",
        "created": NOV_1,
        "currency": "usd",
        "customer": "cus_TAbC123xyz",
        "customer_creation": None,
        "customer_details": {
            "address": {"country": "DE", "postal_code": "10115"},
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "tax_exempt": "none",
        },
        "customer_email": None,
        "expires_at": NOV_1 + 86_400,
        "invoice": None,
        "livemode": False,
        "metadata": {"account_id": "acct_42", "package_id": "pack_500"},
        "mode": "payment",
        "payment_intent": "pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "status": "complete",
        "subscription": None,
        "success_url": "https://app.example.com/billing?done=1",
        "ui_mode": "hosted",
        "url": None,
        **overrides,
    }


def subscription_item(**overrides: Any) -> dict[str, Any]:
    """A subscription item, which carries the current period since API 2025-03-31."""
    return {
        "id": "si_TAbCdEfGhIjK01",
        "object": "subscription_item",
        "created": NOV_1,
        "current_period_end": DEC_1,
        "current_period_start": NOV_1,
        "discounts": [],
        "metadata": {},
        "price": price(),
        "quantity": 1,
        "subscription": "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
        "tax_rates": [],
        **overrides,
    }


def subscription(**overrides: Any) -> dict[str, Any]:
    """An active monthly subscription; no current_period_* of its own (removed 2025-03-31)."""
    return {
        "id": "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
        "object": "subscription",
        "application": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": NOV_1,
        "billing_mode": {"flexible": None, "type": "classic"},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": NOV_1,
        "currency": "usd",
        "customer": "cus_TAbC123xyz",
        "default_payment_method": "pm_1SWdGs2eZvKYlo2CxYz",
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [subscription_item()],
            "has_more": False,
            "total_count": 1,
            "url": "/v1/subscription_items?subscription=sub_1SWdGt2eZvKYlo2CaBcDeFgH",
        },
        "latest_invoice": "in_1SWdGt2eZvKYlo2CInv0001",
        "livemode": False,
        "metadata": {"account_id": "acct_42", "plan_id": "starter_monthly"},
        "pause_collection": None,
        "start_date": NOV_1,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
        **overrides,
    }


def invoice_line(**overrides: Any) -> dict[str, Any]:
    """The subscription item's line of a renewal invoice: it pays for Nov 1 to Dec 1."""
    return {
        "id": "il_1SWdGt2eZvKYlo2CLine0001",
        "object": "line_item",
        "amount": 2000,
        "currency": "usd",
        "description": "1 x Starter (at $20.00 / month)",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": "in_1SWdGt2eZvKYlo2CInv0001",
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
                "subscription_item": "si_TAbCdEfGhIjK01",
            },
            "type": "subscription_item_details",
        },
        "period": {"end": DEC_1, "start": NOV_1},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {
                "price": "price_1SWd0a2eZvKYlo2CStarterM",
                "product": "prod_TStarter01",
            },
            "type": "price_details",
            "unit_amount_decimal": "2000",
        },
        "quantity": 1,
        "subtotal": 2000,
        "taxes": [],
        **overrides,
    }


def invoice(lines: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """A paid renewal invoice; its own period_start/end are the previous period (Oct)."""
    line_items = [invoice_line()] if lines is None else lines
    return {
        "id": "in_1SWdGt2eZvKYlo2CInv0001",
        "object": "invoice",
        "account_country": "DE",
        "amount_due": 2000,
        "amount_overpaid": 0,
        "amount_paid": 2000,
        "amount_remaining": 0,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": False,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": NOV_1,
        "currency": "usd",
        "customer": "cus_TAbC123xyz",
        "customer_email": "ada@example.com",
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_abc",
        "lines": {
            "object": "list",
            "data": line_items,
            "has_more": False,
            "total_count": len(line_items),
            "url": "/v1/invoices/in_1SWdGt2eZvKYlo2CInv0001/lines",
        },
        "livemode": False,
        "metadata": {},
        "number": "A1B2C3D4-0002",
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": {"account_id": "acct_42", "plan_id": "starter_monthly"},
                "subscription": "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
            },
            "type": "subscription_details",
        },
        "period_end": NOV_1,
        "period_start": OCT_1,
        "status": "paid",
        "status_transitions": {"finalized_at": NOV_1, "paid_at": NOV_1 + 5},
        "subtotal": 2000,
        "total": 2000,
        **overrides,
    }


def payment_intent(**overrides: Any) -> dict[str, Any]:
    """A payment intent whose card was declined; last_payment_error carries card details."""
    return {
        "id": "pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        "object": "payment_intent",
        "amount": 5000,
        "amount_received": 0,
        "created": NOV_1,
        "currency": "usd",
        "customer": "cus_TAbC123xyz",
        "last_payment_error": {
            "charge": "ch_3SWdGt2eZvKYlo2C1Declined",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card has insufficient funds.",
            "payment_method": {
                "id": "pm_1SWdGs2eZvKYlo2CxYz",
                "object": "payment_method",
                "billing_details": {"email": "ada@example.com", "name": "Ada Lovelace"},
                "card": {
                    "brand": "visa",
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2030,
                    "fingerprint": "Xt5EWLLDS7FJjR1c",
                    "funding": "credit",
                    "last4": "9995",
                },
                "type": "card",
            },
            "type": "card_error",
        },
        "livemode": False,
        "metadata": {"account_id": "acct_42", "package_id": "pack_500"},
        "payment_method": None,
        "status": "requires_payment_method",
        **overrides,
    }


def charge(**overrides: Any) -> dict[str, Any]:
    """A charge refunded in part."""
    return {
        "id": "ch_3SWdGt2eZvKYlo2C1Refund1",
        "object": "charge",
        "amount": 5000,
        "amount_captured": 5000,
        "amount_refunded": 2000,
        "billing_details": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "captured": True,
        "created": NOV_1,
        "currency": "usd",
        "customer": "cus_TAbC123xyz",
        "disputed": False,
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": "pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        "payment_method_details": {
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030},
            "type": "card",
        },
        "refunded": False,
        "status": "succeeded",
        **overrides,
    }


def dispute(**overrides: Any) -> dict[str, Any]:
    """A dispute that needs a response."""
    return {
        "id": "du_1SWdGt2eZvKYlo2CDisp0001",
        "object": "dispute",
        "amount": 5000,
        "balance_transactions": [],
        "charge": "ch_3SWdGt2eZvKYlo2C1Refund1",
        "created": NOV_1,
        "currency": "usd",
        "enhanced_eligibility_types": [],
        "evidence_details": {"due_by": NOV_1 + 7 * 86_400, "has_evidence": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": "pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        "reason": "fraudulent",
        "status": "needs_response",
        **overrides,
    }
