"""Builders for Stripe webhook events and the objects they carry, and Stripe's signature.

This module owns the shapes of the objects Stripe sends to webhooks for the API version the
installed `stripe` package pins (`2026-10-28.endive`): Checkout sessions, subscriptions (with
their items), invoices (with lines), charges, payment intents and disputes. Field names and
required fields follow the schemas of Stripe's OpenAPI description (checked in
`tests/unit/test_fake_stripe.py`). Since API version 2025-03-31.basil:

- `current_period_start` / `current_period_end` live on each subscription item, not on the
  subscription;
- an invoice names its subscription at `parent.subscription_details.subscription`, with the
  subscription's metadata at `parent.subscription_details.metadata`;
- an invoice line names its price at `pricing.price_details.price` (an id unless expanded).

`sign` writes the `Stripe-Signature` header exactly as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import stripe

from tests.fakes.stripe_ids import new_id

JsonObject = dict[str, Any]

API_VERSION: str = stripe.api_version
DISPUTE_RESPONSE_WINDOW = 7 * 24 * 60 * 60


def _now() -> int:
    return int(time.time())


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header for `payload`: `t=<timestamp>,v1=<hex HMAC-SHA256 of
    "<timestamp>.<payload>" keyed with the endpoint secret>`."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(
    type: str,
    obj: Mapping[str, Any],
    *,
    created: int | None = None,
    event_id: str | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
) -> JsonObject:
    """A full event envelope carrying a snapshot of `obj`."""
    data: JsonObject = {"object": dict(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": event_id or new_id("evt_1"),
        "object": "event",
        "api_version": API_VERSION,
        "created": _now() if created is None else created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


def checkout_session(
    *,
    session_id: str | None = None,
    mode: str = "payment",
    customer: str | None,
    payment_status: str = "paid",
    status: str = "complete",
    metadata: Mapping[str, str],
    client_reference_id: str | None = None,
    amount_total: int,
    currency: str = "usd",
    payment_intent: str | None = None,
    subscription: str | None = None,
    created: int | None = None,
    customer_email: str | None = None,
) -> JsonObject:
    """A `checkout.session` as `checkout.session.completed` carries it (no `line_items`:
    Stripe sends those only when expanded)."""
    session_id = session_id or new_id("cs_test_a1", 58)
    created = _now() if created is None else created
    return {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://example.test/cancel",
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_creation": None if customer or mode != "payment" else "if_required",
        "customer_details": {
            "address": None,
            "business_name": None,
            "email": customer_email,
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": customer_email,
        "discounts": [],
        "expires_at": created + 24 * 60 * 60,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": None,
        "metadata": dict(metadata),
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_collection": "always" if mode == "subscription" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": status,
        "submit_type": None,
        "subscription": subscription,
        "success_url": "https://example.test/success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": f"https://checkout.stripe.com/c/pay/{session_id}" if status == "open" else None,
    }


def price(
    *,
    price_id: str,
    product: str,
    unit_amount: int,
    currency: str = "usd",
    lookup_key: str | None = None,
    interval: str | None = "month",
    metadata: Mapping[str, str] | None = None,
    created: int | None = None,
    active: bool = True,
) -> JsonObject:
    """A `price`, recurring every `interval` (one-time when `interval` is None)."""
    return {
        "id": price_id,
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": _now() if created is None else created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": dict(metadata or {}),
        "nickname": None,
        "product": product,
        "recurring": None
        if interval is None
        else {"interval": interval, "interval_count": 1, "meter": None, "usage_type": "licensed"},
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time" if interval is None else "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def subscription(
    *,
    subscription_id: str,
    customer: str,
    price_id: str,
    lookup_key: str | None,
    interval: str = "month",
    status: str = "active",
    current_period_start: int,
    current_period_end: int,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    metadata: Mapping[str, str],
    unit_amount: int,
    currency: str = "usd",
    product: str = "prod_credits",
    quantity: int = 1,
    item_id: str | None = None,
    created: int | None = None,
) -> JsonObject:
    """A `subscription` with one item; the billing period lives on the item."""
    created = current_period_start if created is None else created
    item: JsonObject = {
        "id": item_id or new_id("si_", 14),
        "object": "subscription_item",
        "created": created,
        "current_period_end": current_period_end,
        "current_period_start": current_period_start,
        "discounts": [],
        "metadata": {},
        "price": price(
            price_id=price_id,
            product=product,
            unit_amount=unit_amount,
            currency=currency,
            lookup_key=lookup_key,
            interval=interval,
            created=created,
        ),
        "quantity": quantity,
        "subscription": subscription_id,
        "tax_rates": [],
    }
    canceled = status == "canceled" or canceled_at is not None
    return {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": current_period_start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": current_period_end if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if canceled or cancel_at_period_end else None,
        },
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": dict(metadata),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def invoice(
    *,
    invoice_id: str | None = None,
    customer: str,
    subscription_id: str | None,
    subscription_metadata: Mapping[str, str],
    price_id: str,
    lookup_key: str | None = None,
    period_start: int,
    period_end: int,
    billing_reason: str = "subscription_cycle",
    status: str = "paid",
    amount_paid: int,
    amount_due: int,
    currency: str = "usd",
    product: str = "prod_credits",
    subscription_item: str | None = None,
    quantity: int = 1,
    created: int | None = None,
    expand_price: bool = False,
) -> JsonObject:
    """An `invoice` for one subscription line covering `period_start`..`period_end`.

    The line's `period` is the service period paid for. As Stripe does, the invoice's own
    `period_start`/`period_end` look back one period on a renewal (`subscription_cycle`)
    and are both the creation time on a first invoice: read periods from the line.
    The line's price is an id unless `expand_price` (as with
    `expand[]=lines.data.pricing.price_details.price`), then a `price` carrying `lookup_key`.
    """
    invoice_id = invoice_id or new_id("in_1")
    created = period_start if created is None else created
    if billing_reason == "subscription_cycle":
        own_period = (period_start - (period_end - period_start), period_start)
    else:
        own_period = (created, created)
    paid = status == "paid"
    finalized = status in ("open", "paid", "uncollectible", "void")
    line_price: str | JsonObject = price_id
    if expand_price:
        line_price = price(
            price_id=price_id,
            product=product,
            unit_amount=amount_due // max(quantity, 1),
            currency=currency,
            lookup_key=lookup_key,
        )
    line: JsonObject = {
        "id": new_id("il_1"),
        "object": "line_item",
        "amount": amount_due,
        "currency": currency,
        "description": f"{quantity} × {lookup_key or product}",  # noqa: RUF001 - as Stripe writes it
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": None
        if subscription_id is None
        else {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": subscription_item or new_id("si_", 14),
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": line_price, "product": product},
            "type": "price_details",
            "unit_amount_decimal": str(amount_due // max(quantity, 1)),
        },
        "quantity": quantity,
        "subtotal": amount_due,
        "taxes": [],
    }
    return {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Creditline (test)",
        "account_tax_ids": None,
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": amount_paid,
        "amount_paid_off_stripe": 0,
        "amount_remaining": max(amount_due - amount_paid, 0),
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1 if finalized else 0,
        "attempted": finalized,
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "confirmation_secret": None,
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created if finalized else None,
        "ending_balance": 0 if finalized else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{invoice_id}"
        if finalized
        else None,
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_test/{invoice_id}/pdf"
        if finalized
        else None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [line],
            "has_more": False,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": f"{invoice_id[-8:].upper()}-0001" if finalized else None,
        "on_behalf_of": None,
        "parent": None
        if subscription_id is None
        else {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription_metadata),
                "subscription": subscription_id,
            },
            "type": "subscription_details",
        },
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": own_period[1],
        "period_start": own_period[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": created if finalized else None,
            "marked_uncollectible_at": created if status == "uncollectible" else None,
            "paid_at": created if paid else None,
            "voided_at": created if status == "void" else None,
        },
        "subtotal": amount_due,
        "subtotal_excluding_tax": amount_due,
        "test_clock": None,
        "total": amount_due,
        "total_discount_amounts": [],
        "total_excluding_tax": amount_due,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created if finalized else None,
    }


def charge(
    *,
    charge_id: str | None = None,
    customer: str | None,
    payment_intent: str | None,
    amount: int,
    amount_refunded: int = 0,
    currency: str = "usd",
    metadata: Mapping[str, str] | None = None,
    disputed: bool = False,
    created: int | None = None,
) -> JsonObject:
    """A succeeded, captured card `charge`; `refunded` is true once fully refunded."""
    charge_id = charge_id or new_id("ch_")
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn_"),
        "billing_details": {
            "address": None,
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "CREDITLINE",
        "captured": True,
        "created": _now() if created is None else created,
        "currency": currency,
        "customer": customer,
        "description": None,
        "disputed": disputed,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(metadata or {}),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": new_id("pm_"),
        "payment_method_details": None,
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{charge_id}",
        "refunded": amount_refunded >= amount > 0,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def payment_intent(
    *,
    payment_intent_id: str | None = None,
    customer: str | None,
    amount: int,
    status: str = "requires_payment_method",
    metadata: Mapping[str, str] | None = None,
    last_payment_error_message: str | None = None,
    currency: str = "usd",
    latest_charge: str | None = None,
    created: int | None = None,
) -> JsonObject:
    """A `payment_intent`; a `last_payment_error_message` becomes a declined-card error."""
    payment_intent_id = payment_intent_id or new_id("pi_")
    error: JsonObject | None = None
    if last_payment_error_message is not None:
        error = {
            "code": "card_declined",
            "decline_code": "generic_decline",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": last_payment_error_message,
            "type": "card_error",
        }
    return {
        "id": payment_intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{payment_intent_id}_secret_{new_id('', 25)}",
        "confirmation_method": "automatic",
        "created": _now() if created is None else created,
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "description": None,
        "excluded_payment_method_types": None,
        "last_payment_error": error,
        "latest_charge": latest_charge,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


_EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)


def dispute(
    *,
    dispute_id: str | None = None,
    charge: str,
    payment_intent: str | None,
    amount: int,
    status: str = "needs_response",
    reason: str = "fraudulent",
    currency: str = "usd",
    created: int | None = None,
) -> JsonObject:
    """A `dispute` on `charge` (`balance_transactions` left empty)."""
    created = _now() if created is None else created
    evidence: JsonObject = dict.fromkeys(_EVIDENCE_FIELDS)
    evidence["enhanced_evidence"] = {}
    return {
        "id": dispute_id or new_id("dp_"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": evidence,
        "evidence_details": {
            "due_by": created + DISPUTE_RESPONSE_WINDOW,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
    }
