"""translate(): each handled Stripe event → StripeEvent, unhandled → None, gaps → BadPayload."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from creditline.v1 import stripe_event_pb2, subscription_pb2

from tests.gateway import shapes
from tests.gateway.shapes import DEC_1, NOV_1
from webhook_gateway.translate import FAILURE_MESSAGE_LIMIT, HANDLED_TYPES, BadPayload, translate


def _translate(event: dict[str, Any]) -> stripe_event_pb2.StripeEvent:
    result = translate(event)
    assert result is not None
    return result


def test_envelope_fields_are_copied() -> None:
    event = shapes.event("charge.refunded", shapes.charge(), event_id="evt_abc", created=NOV_1)

    result = _translate(event)

    assert result.event_id == "evt_abc"
    assert result.type == "charge.refunded"
    assert result.create_time.seconds == NOV_1


@pytest.mark.parametrize(
    "event_type", ["checkout.session.completed", "checkout.session.async_payment_succeeded"]
)
def test_checkout_session_for_a_package(event_type: str) -> None:
    result = _translate(shapes.event(event_type, shapes.checkout_session()))

    assert result.WhichOneof("payload") == "checkout_session"
    assert result.checkout_session == stripe_event_pb2.CheckoutSessionPayload(
        session_id="cs_test_a1B2c3D4e5F6g7H8i9J0",
        mode="payment",
        payment_status="paid",
        customer_id="cus_TAbC123xyz",
        account_id="acct_42",
        package_id="pack_500",
        payment_intent_id="pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        amount_total=5000,
        currency="usd",
    )


def test_checkout_session_for_a_plan_names_the_subscription() -> None:
    session = shapes.checkout_session(
        mode="subscription",
        payment_intent=None,
        subscription="sub_1SWdGt2eZvKYlo2CaBcDeFgH",
        metadata={"account_id": "acct_42", "plan_id": "starter_monthly"},
        amount_total=2000,
    )

    payload = _translate(shapes.event("checkout.session.completed", session)).checkout_session

    assert payload.mode == "subscription"
    assert payload.plan_id == "starter_monthly"
    assert payload.package_id == ""
    assert payload.subscription_id == "sub_1SWdGt2eZvKYlo2CaBcDeFgH"
    assert payload.payment_intent_id == ""


def test_checkout_session_account_falls_back_to_client_reference_id() -> None:
    session = shapes.checkout_session(metadata={"package_id": "pack_500"})

    payload = _translate(shapes.event("checkout.session.completed", session)).checkout_session

    assert payload.account_id == "acct_42"


def test_checkout_session_with_expanded_objects_and_nulls() -> None:
    session = shapes.checkout_session(
        customer={"id": "cus_expanded", "object": "customer", "email": "ada@example.com"},
        payment_intent={"id": "pi_expanded", "object": "payment_intent"},
        client_reference_id=None,
        metadata=None,
        amount_total=None,
        currency=None,
        payment_status="unpaid",
    )

    payload = _translate(shapes.event("checkout.session.completed", session)).checkout_session

    assert payload.customer_id == "cus_expanded"
    assert payload.payment_intent_id == "pi_expanded"
    assert payload.account_id == ""
    assert payload.amount_total == 0
    assert payload.currency == ""
    assert payload.payment_status == "unpaid"


@pytest.mark.parametrize(
    "event_type",
    ["customer.subscription.created", "customer.subscription.updated"],
)
def test_subscription_takes_price_and_period_from_its_first_item(event_type: str) -> None:
    result = _translate(shapes.event(event_type, shapes.subscription()))

    assert result.WhichOneof("payload") == "subscription"
    payload = result.subscription
    assert payload.subscription_id == "sub_1SWdGt2eZvKYlo2CaBcDeFgH"
    assert payload.customer_id == "cus_TAbC123xyz"
    assert payload.account_id == "acct_42"
    assert payload.price_id == "price_1SWd0a2eZvKYlo2CStarterM"
    assert payload.lookup_key == "starter_monthly"
    assert payload.status == subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    assert payload.current_period_start_time.seconds == NOV_1
    assert payload.current_period_end_time.seconds == DEC_1
    assert not payload.cancel_at_period_end
    assert not payload.HasField("cancel_time")
    assert not payload.HasField("end_time")


def test_subscription_deleted_carries_cancel_and_end_times() -> None:
    canceled = shapes.subscription(
        status="canceled",
        cancel_at_period_end=True,
        canceled_at=NOV_1 + 3600,
        ended_at=DEC_1,
    )

    payload = _translate(shapes.event("customer.subscription.deleted", canceled)).subscription

    assert payload.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert payload.cancel_at_period_end
    assert payload.cancel_time.seconds == NOV_1 + 3600
    assert payload.end_time.seconds == DEC_1


@pytest.mark.parametrize(
    ("stripe_status", "status"),
    [
        ("incomplete", subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE),
        ("incomplete_expired", subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED),
        ("trialing", subscription_pb2.SUBSCRIPTION_STATUS_TRIALING),
        ("active", subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE),
        ("past_due", subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE),
        ("canceled", subscription_pb2.SUBSCRIPTION_STATUS_CANCELED),
        ("unpaid", subscription_pb2.SUBSCRIPTION_STATUS_UNPAID),
        ("paused", subscription_pb2.SUBSCRIPTION_STATUS_PAUSED),
    ],
)
def test_subscription_statuses(
    stripe_status: str, status: subscription_pb2.SubscriptionStatus.ValueType
) -> None:
    event = shapes.event("customer.subscription.updated", shapes.subscription(status=stripe_status))

    assert _translate(event).subscription.status == status


def test_subscription_with_an_unknown_status_is_a_bad_payload() -> None:
    event = shapes.event("customer.subscription.updated", shapes.subscription(status="frozen"))

    with pytest.raises(BadPayload, match=r"data\.object\.status"):
        translate(event)


def test_subscription_price_without_lookup_key() -> None:
    item = shapes.subscription_item(price=shapes.price(lookup_key=None))
    subscription = shapes.subscription()
    subscription["items"]["data"] = [item]

    payload = _translate(shapes.event("customer.subscription.updated", subscription)).subscription

    assert payload.lookup_key == ""


def test_invoice_paid_uses_the_subscription_line_period_not_the_invoice_period() -> None:
    result = _translate(shapes.event("invoice.paid", shapes.invoice()))

    assert result.WhichOneof("payload") == "invoice"
    assert result.invoice == stripe_event_pb2.InvoicePayload(
        invoice_id="in_1SWdGt2eZvKYlo2CInv0001",
        customer_id="cus_TAbC123xyz",
        subscription_id="sub_1SWdGt2eZvKYlo2CaBcDeFgH",
        account_id="acct_42",
        price_id="price_1SWd0a2eZvKYlo2CStarterM",
        lookup_key="",
        period_start_time=result.invoice.period_start_time,
        period_end_time=result.invoice.period_end_time,
        billing_reason="subscription_cycle",
        paid=True,
        amount_paid=2000,
    )
    # The invoice's own period_start/period_end (Oct 1 to Nov 1) is the period just ended.
    assert result.invoice.period_start_time.seconds == NOV_1
    assert result.invoice.period_end_time.seconds == DEC_1


def test_invoice_payment_failed_is_not_paid() -> None:
    failed = shapes.invoice(amount_paid=0, status="open")

    payload = _translate(shapes.event("invoice.payment_failed", failed)).invoice

    assert not payload.paid
    assert payload.amount_paid == 0


def test_invoice_line_price_may_be_expanded() -> None:
    line = shapes.invoice_line()
    line["pricing"]["price_details"]["price"] = shapes.price(id="price_expanded")

    payload = _translate(shapes.event("invoice.paid", shapes.invoice(lines=[line]))).invoice

    assert payload.price_id == "price_expanded"


def _proration(amount: int, price_id: str, start: int) -> dict[str, Any]:
    line = shapes.invoice_line(
        id=f"il_proration_{price_id}",
        amount=amount,
        period={"start": start, "end": DEC_1},
    )
    line["parent"]["subscription_item_details"]["proration"] = True
    line["pricing"]["price_details"]["price"] = price_id
    return line


def test_invoice_prefers_the_regular_subscription_line_over_prorations() -> None:
    lines = [
        _proration(-1000, "price_old", NOV_1 + 86_400),
        _proration(2500, "price_pro", NOV_1 + 86_400),
        shapes.invoice_line(),
    ]

    payload = _translate(shapes.event("invoice.paid", shapes.invoice(lines=lines))).invoice

    assert payload.price_id == "price_1SWd0a2eZvKYlo2CStarterM"
    assert payload.period_start_time.seconds == NOV_1
    assert not payload.proration


def test_invoice_of_an_upgrade_takes_the_charged_proration() -> None:
    lines = [
        _proration(-1000, "price_old", NOV_1 + 86_400),
        _proration(2500, "price_pro", NOV_1 + 86_400),
    ]
    upgrade = shapes.invoice(lines=lines, billing_reason="subscription_update")

    payload = _translate(shapes.event("invoice.paid", upgrade)).invoice

    assert payload.price_id == "price_pro"
    assert payload.billing_reason == "subscription_update"
    assert payload.proration


def test_invoice_without_a_subscription_line_takes_the_first_line() -> None:
    line = shapes.invoice_line()
    line["parent"] = {
        "invoice_item_details": {"invoice_item": "ii_1", "subscription": None},
        "subscription_item_details": None,
        "type": "invoice_item_details",
    }

    payload = _translate(shapes.event("invoice.paid", shapes.invoice(lines=[line]))).invoice

    assert payload.price_id == "price_1SWd0a2eZvKYlo2CStarterM"


@pytest.mark.parametrize(
    "parent",
    [
        None,
        {
            "quote_details": {"quote": "qt_1"},
            "subscription_details": None,
            "type": "quote_details",
        },
    ],
)
def test_invoice_without_a_subscription_is_not_ours(parent: dict[str, Any] | None) -> None:
    one_off = shapes.invoice(parent=parent, billing_reason="manual")

    assert translate(shapes.event("invoice.paid", one_off)) is None


def test_payment_intent_failure_forwards_only_the_message() -> None:
    result = _translate(shapes.event("payment_intent.payment_failed", shapes.payment_intent()))

    assert result.payment_intent == stripe_event_pb2.PaymentIntentPayload(
        payment_intent_id="pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        customer_id="cus_TAbC123xyz",
        account_id="acct_42",
        failure_message="Your card has insufficient funds.",
    )
    wire = result.SerializeToString()
    for card_field in (b"9995", b"Xt5EWLLDS7FJjR1c", b"visa", b"insufficient_funds", b"2030"):
        assert card_field not in wire


def test_payment_intent_failure_message_is_truncated() -> None:
    intent = shapes.payment_intent()
    intent["last_payment_error"]["message"] = "x" * 2000

    payload = _translate(shapes.event("payment_intent.payment_failed", intent)).payment_intent

    assert len(payload.failure_message) == FAILURE_MESSAGE_LIMIT


def test_payment_intent_without_error_or_customer() -> None:
    intent = shapes.payment_intent(last_payment_error=None, customer=None, metadata={})

    payload = _translate(shapes.event("payment_intent.payment_failed", intent)).payment_intent

    assert payload.failure_message == ""
    assert payload.customer_id == ""
    assert payload.account_id == ""


def test_charge_refunded() -> None:
    result = _translate(shapes.event("charge.refunded", shapes.charge()))

    assert result.charge == stripe_event_pb2.ChargePayload(
        charge_id="ch_3SWdGt2eZvKYlo2C1Refund1",
        payment_intent_id="pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        customer_id="cus_TAbC123xyz",
        amount=5000,
        amount_refunded=2000,
    )


def test_dispute_created_is_open() -> None:
    result = _translate(shapes.event("charge.dispute.created", shapes.dispute()))

    assert result.dispute == stripe_event_pb2.DisputePayload(
        dispute_id="du_1SWdGt2eZvKYlo2CDisp0001",
        charge_id="ch_3SWdGt2eZvKYlo2C1Refund1",
        payment_intent_id="pi_3SWdGt2eZvKYlo2C1aBcDeFg",
        amount=5000,
        state=stripe_event_pb2.DISPUTE_STATE_OPEN,
    )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("won", stripe_event_pb2.DISPUTE_STATE_WON),
        ("warning_closed", stripe_event_pb2.DISPUTE_STATE_WON),
        ("prevented", stripe_event_pb2.DISPUTE_STATE_WON),
        ("lost", stripe_event_pb2.DISPUTE_STATE_LOST),
    ],
)
def test_dispute_closed(status: str, state: stripe_event_pb2.DisputeState.ValueType) -> None:
    closed = shapes.dispute(status=status, charge={"id": "ch_expanded", "object": "charge"})

    payload = _translate(shapes.event("charge.dispute.closed", closed)).dispute

    assert payload.state == state
    assert payload.charge_id == "ch_expanded"


def test_dispute_closed_with_an_open_status_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload, match="needs_response"):
        translate(shapes.event("charge.dispute.closed", shapes.dispute()))


@pytest.mark.parametrize(
    "event_type",
    ["customer.created", "invoice.upcoming", "invoice.finalized", "payment_intent.succeeded"],
)
def test_unhandled_types_are_none(event_type: str) -> None:
    assert event_type not in HANDLED_TYPES
    assert translate(shapes.event(event_type, {"id": "x", "object": "whatever"})) is None


def _without(data: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of data with the dotted path removed ("items.data.0.price")."""
    copied = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = copied
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[last]
    return copied


@pytest.mark.parametrize(
    ("event", "path", "field"),
    [
        (shapes.event("charge.refunded", shapes.charge()), "id", "id"),
        (shapes.event("charge.refunded", shapes.charge()), "created", "created"),
        (shapes.event("charge.refunded", shapes.charge()), "data", "data"),
        (shapes.event("charge.refunded", shapes.charge()), "data.object", "data.object"),
        (
            shapes.event("checkout.session.completed", shapes.checkout_session()),
            "data.object.mode",
            "data.object.mode",
        ),
        (
            shapes.event("customer.subscription.updated", shapes.subscription()),
            "data.object.items",
            "data.object.items",
        ),
        (
            shapes.event("customer.subscription.updated", shapes.subscription()),
            "data.object.items.data.0.current_period_end",
            "data.object.items.data[0].current_period_end",
        ),
        (
            shapes.event("customer.subscription.updated", shapes.subscription()),
            "data.object.items.data.0.price",
            "data.object.items.data[0].price",
        ),
        (
            shapes.event("customer.subscription.updated", shapes.subscription()),
            "data.object.customer",
            "data.object.customer",
        ),
        (
            shapes.event("invoice.paid", shapes.invoice()),
            "data.object.lines.data.0.pricing",
            "data.object.lines.data[0].pricing",
        ),
        (
            shapes.event("invoice.paid", shapes.invoice()),
            "data.object.lines.data.0.period",
            "data.object.lines.data[0].period",
        ),
        (
            shapes.event("invoice.paid", shapes.invoice()),
            "data.object.parent.subscription_details.subscription",
            "data.object.parent.subscription_details.subscription",
        ),
        (
            shapes.event("invoice.paid", shapes.invoice()),
            "data.object.amount_paid",
            "data.object.amount_paid",
        ),
        (
            shapes.event("charge.refunded", shapes.charge()),
            "data.object.amount_refunded",
            "data.object.amount_refunded",
        ),
        (
            shapes.event("charge.dispute.created", shapes.dispute()),
            "data.object.charge",
            "data.object.charge",
        ),
        (
            shapes.event("payment_intent.payment_failed", shapes.payment_intent()),
            "data.object.id",
            "data.object.id",
        ),
    ],
)
def test_missing_fields_are_bad_payloads_naming_the_field(
    event: dict[str, Any], path: str, field: str
) -> None:
    with pytest.raises(BadPayload, match=f"^{re.escape(field)} is missing$"):
        translate(_without(event, path))


def test_wrong_types_are_bad_payloads() -> None:
    event = shapes.event("charge.refunded", shapes.charge(amount="5000"))

    with pytest.raises(BadPayload, match=r"data\.object\.amount must be an integer"):
        translate(event)


def test_empty_lists_are_bad_payloads() -> None:
    subscription = shapes.subscription()
    subscription["items"]["data"] = []

    with pytest.raises(BadPayload, match=r"items\.data is empty"):
        translate(shapes.event("customer.subscription.updated", subscription))
    with pytest.raises(BadPayload, match=r"lines\.data is empty"):
        translate(shapes.event("invoice.paid", shapes.invoice(lines=[])))


def test_events_rendered_before_2025_03_31_are_refused() -> None:
    old = shapes.event("invoice.paid", shapes.invoice())
    old["api_version"] = "2024-06-20"

    with pytest.raises(BadPayload, match="api_version 2024-06-20"):
        translate(old)
    old["type"] = "customer.created"
    assert translate(old) is None
