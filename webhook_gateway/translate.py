"""Stripe event JSON → creditline.v1.StripeEvent: pure functions, no I/O, no clock.

`translate` reads the fields Creditline acts on from a verified event, shaped as Stripe renders
it at API version 2025-03-31 or newer (stripe 16.1.0 pins 2026-10-28.endive). Since 2025-03-31 a
subscription's current period lives on its items, and an invoice names its subscription under
`parent.subscription_details` and each line's price under `pricing.price_details`; an event
rendered at an older version is refused as BadPayload rather than misread, because its invoices
would look like invoices without a subscription and be silently ignored.

It returns None for an event Creditline does not act on (an unhandled type, or an invoice that
bills no subscription), and raises BadPayload naming the field when a handled event lacks what
it needs. It copies ids, amounts, times and metadata only: never card or payment-method fields,
and of a failed payment only Stripe's message, truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from creditline.v1 import stripe_event_pb2, subscription_pb2
from google.protobuf import timestamp_pb2

StripeEvent = stripe_event_pb2.StripeEvent

OLDEST_API_VERSION: Final = "2025-03-31"
"""The oldest Stripe API version whose event shapes translate reads correctly."""

FAILURE_MESSAGE_LIMIT: Final = 500
"""The longest failure message forwarded, in characters."""

SUBSCRIPTION_STATUSES: Final[Mapping[str, subscription_pb2.SubscriptionStatus.ValueType]] = {
    "incomplete": subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE,
    "incomplete_expired": subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED,
    "trialing": subscription_pb2.SUBSCRIPTION_STATUS_TRIALING,
    "active": subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    "past_due": subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    "canceled": subscription_pb2.SUBSCRIPTION_STATUS_CANCELED,
    "unpaid": subscription_pb2.SUBSCRIPTION_STATUS_UNPAID,
    "paused": subscription_pb2.SUBSCRIPTION_STATUS_PAUSED,
}
"""Stripe's subscription status strings and the SubscriptionStatus each mirrors."""

# Dispute statuses that close a dispute without a chargeback. "prevented" is a chargeback the
# card network stopped before it was filed (Visa RDR) by refunding the charge; the refund
# arrives as its own charge.refunded event, so the dispute itself must not claw back again.
_DISPUTE_WON: Final = frozenset({"won", "warning_closed", "prevented"})
_DISPUTE_LOST: Final = frozenset({"lost"})


class BadPayload(ValueError):
    """A handled event lacks a field Creditline needs, or holds a value it cannot map.

    The message names the field by its path from the event's root (and quotes an unmappable
    status or version); it never quotes ids, metadata or card data.
    """


class _Fields:
    """One JSON object of the event and its path from the event's root, for error messages."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self._data = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _value(self, key: str, required: bool) -> Any:
        value = self._data.get(key)
        if value is None and required:
            raise BadPayload(f"{self._where(key)} is missing")
        return value

    def text(self, key: str, *, required: bool = True) -> str:
        """A string field; "" when an optional one is null or absent."""
        value = self._value(key, required)
        if value is None:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise BadPayload(f"{self._where(key)} must be a non-empty string")
        return value

    def ref(self, key: str, *, required: bool = True) -> str:
        """The id of a field that holds an object's id, or the object itself when expanded."""
        value = self._value(key, required)
        if value is None:
            return ""
        if isinstance(value, Mapping):
            return _Fields(value, self._where(key)).text("id")
        if not isinstance(value, str) or not value:
            raise BadPayload(f"{self._where(key)} must be an id or an object with an id")
        return value

    def integer(self, key: str, *, required: bool = True) -> int:
        """An integer field; 0 when an optional one is null or absent."""
        value = self._value(key, required)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadPayload(f"{self._where(key)} must be an integer")
        return value

    def flag(self, key: str) -> bool:
        """A boolean field that must be present."""
        value = self._value(key, True)
        if not isinstance(value, bool):
            raise BadPayload(f"{self._where(key)} must be true or false")
        return value

    def time(self, key: str) -> timestamp_pb2.Timestamp:
        """A Unix-seconds field that must be present, as a Timestamp."""
        return timestamp_pb2.Timestamp(seconds=self.integer(key))

    def maybe_time(self, key: str) -> timestamp_pb2.Timestamp | None:
        """A Unix-seconds field as a Timestamp, or None when it is null or absent."""
        return None if self._data.get(key) is None else self.time(key)

    def child(self, key: str) -> _Fields:
        """A nested object that must be present."""
        child = self.maybe_child(key)
        if child is None:
            raise BadPayload(f"{self._where(key)} is missing")
        return child

    def maybe_child(self, key: str) -> _Fields | None:
        """A nested object, or None when it is null or absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise BadPayload(f"{self._where(key)} must be an object")
        return _Fields(value, self._where(key))

    def list_data(self, key: str) -> list[_Fields]:
        """The objects of a Stripe list field (`{"object": "list", "data": [...]}`)."""
        data = self.child(key)._value("data", True)
        where = f"{self._where(key)}.data"
        if not isinstance(data, list):
            raise BadPayload(f"{where} must be a list")
        items: list[_Fields] = []
        for index, item in enumerate(data):
            if not isinstance(item, Mapping):
                raise BadPayload(f"{where}[{index}] must be an object")
            items.append(_Fields(item, f"{where}[{index}]"))
        return items

    def metadata_value(self, key: str) -> str:
        """metadata[key], or "" when there is no metadata or no such key."""
        metadata = self.maybe_child("metadata")
        return "" if metadata is None else metadata.text(key, required=False)


class _Head:
    """The fields every StripeEvent carries, read from the event's envelope."""

    def __init__(self, event: _Fields) -> None:
        self.event_id = event.text("id")
        self.type = event.text("type")
        self.create_time = event.time("created")


def translate(event: Mapping[str, Any]) -> StripeEvent | None:
    """The StripeEvent to apply for a verified Stripe event, or None when it needs no call.

    Raises BadPayload when the event is not a Stripe event object, or a handled event lacks a
    field Creditline needs or was rendered at an API version older than OLDEST_API_VERSION.
    """
    envelope = _Fields(event, "")
    handler = _HANDLERS.get(envelope.text("type"))
    if handler is None:
        return None
    head = _Head(envelope)
    api_version = envelope.text("api_version", required=False)
    if api_version and api_version[: len(OLDEST_API_VERSION)] < OLDEST_API_VERSION:
        raise BadPayload(
            f"api_version {api_version} is older than {OLDEST_API_VERSION}: set the webhook "
            "endpoint (and the account default, for reconcile) to a newer API version"
        )
    return handler(head, envelope.child("data").child("object"))


def _checkout_session(head: _Head, session: _Fields) -> StripeEvent:
    payload = stripe_event_pb2.CheckoutSessionPayload(
        session_id=session.text("id"),
        mode=session.text("mode"),
        payment_status=session.text("payment_status"),
        customer_id=session.ref("customer", required=False),
        account_id=(
            session.metadata_value("account_id")
            or session.text("client_reference_id", required=False)
        ),
        package_id=session.metadata_value("package_id"),
        package_credits=session.metadata_value("credits"),
        plan_id=session.metadata_value("plan_id"),
        payment_intent_id=session.ref("payment_intent", required=False),
        subscription_id=session.ref("subscription", required=False),
        amount_total=session.integer("amount_total", required=False),
        currency=session.text("currency", required=False),
    )
    return StripeEvent(
        event_id=head.event_id,
        type=head.type,
        create_time=head.create_time,
        checkout_session=payload,
    )


def _subscription(head: _Head, subscription: _Fields) -> StripeEvent:
    items = subscription.list_data("items")
    if not items:
        raise BadPayload(f"{subscription.path}.items.data is empty")
    item = items[0]
    price = item.child("price")
    status = subscription.text("status")
    if status not in SUBSCRIPTION_STATUSES:
        raise BadPayload(f"{subscription.path}.status {status!r} is not a known status")
    payload = stripe_event_pb2.SubscriptionPayload(
        subscription_id=subscription.text("id"),
        customer_id=subscription.ref("customer"),
        account_id=subscription.metadata_value("account_id"),
        price_id=price.text("id"),
        lookup_key=price.text("lookup_key", required=False),
        status=SUBSCRIPTION_STATUSES[status],
        current_period_start_time=item.time("current_period_start"),
        current_period_end_time=item.time("current_period_end"),
        cancel_at_period_end=subscription.flag("cancel_at_period_end"),
        cancel_time=subscription.maybe_time("canceled_at"),
        end_time=subscription.maybe_time("ended_at"),
    )
    return StripeEvent(
        event_id=head.event_id, type=head.type, create_time=head.create_time, subscription=payload
    )


def _invoice(head: _Head, invoice: _Fields) -> StripeEvent | None:
    parent = invoice.maybe_child("parent")
    details = None if parent is None else parent.maybe_child("subscription_details")
    if details is None:
        return None  # a one-off or quote invoice: it bills no subscription of ours
    line = _subscription_line(invoice.list_data("lines"), invoice.path)
    period = line.child("period")
    payload = stripe_event_pb2.InvoicePayload(
        invoice_id=invoice.text("id"),
        customer_id=invoice.ref("customer"),
        subscription_id=details.ref("subscription"),
        account_id=details.metadata_value("account_id"),
        price_id=line.child("pricing").child("price_details").ref("price"),
        # Invoice lines carry no lookup key; the server maps the price id through its catalog.
        lookup_key="",
        period_start_time=period.time("start"),
        period_end_time=period.time("end"),
        billing_reason=invoice.text("billing_reason", required=False),
        paid=head.type == "invoice.paid",
        amount_paid=invoice.integer("amount_paid"),
        proration=_is_proration(line),
    )
    return StripeEvent(
        event_id=head.event_id, type=head.type, create_time=head.create_time, invoice=payload
    )


def _is_proration(line: _Fields) -> bool:
    """Whether an invoice line adjusts part of a period rather than charging a whole one."""
    parent = line.maybe_child("parent")
    details = None if parent is None else parent.maybe_child("subscription_item_details")
    return details is not None and details.flag("proration")


def _subscription_line(lines: list[_Fields], path: str) -> _Fields:
    """The line that says which price and period an invoice pays for.

    The invoice's own period_start/period_end are the window invoice items were collected in,
    which for a renewal is the period just ended; the subscription item's line has the period
    paid for. Prorations (a plan change's "unused time" and "remaining time" lines) come first
    in the list, so a regular subscription line wins, then a proration charging a positive
    amount (the new price), then any subscription line, then the first line.
    """
    if not lines:
        raise BadPayload(f"{path}.lines.data is empty")
    regular: list[_Fields] = []
    charged_prorations: list[_Fields] = []
    subscription_lines: list[_Fields] = []
    for line in lines:
        parent = line.maybe_child("parent")
        if parent is None or parent.text("type", required=False) != "subscription_item_details":
            continue
        subscription_lines.append(line)
        if not _is_proration(line):
            regular.append(line)
        elif line.integer("amount", required=False) > 0:
            charged_prorations.append(line)
    return (regular or charged_prorations or subscription_lines or lines)[0]


def _payment_intent(head: _Head, intent: _Fields) -> StripeEvent:
    error = intent.maybe_child("last_payment_error")
    message = "" if error is None else error.text("message", required=False)
    payload = stripe_event_pb2.PaymentIntentPayload(
        payment_intent_id=intent.text("id"),
        customer_id=intent.ref("customer", required=False),
        account_id=intent.metadata_value("account_id"),
        failure_message=message[:FAILURE_MESSAGE_LIMIT],
    )
    return StripeEvent(
        event_id=head.event_id, type=head.type, create_time=head.create_time, payment_intent=payload
    )


def _charge(head: _Head, charge: _Fields) -> StripeEvent:
    payload = stripe_event_pb2.ChargePayload(
        charge_id=charge.text("id"),
        payment_intent_id=charge.ref("payment_intent", required=False),
        customer_id=charge.ref("customer", required=False),
        amount=charge.integer("amount"),
        amount_refunded=charge.integer("amount_refunded"),
    )
    return StripeEvent(
        event_id=head.event_id, type=head.type, create_time=head.create_time, charge=payload
    )


def _dispute(head: _Head, dispute: _Fields) -> StripeEvent:
    if head.type == "charge.dispute.created":
        state = stripe_event_pb2.DISPUTE_STATE_OPEN
    else:
        status = dispute.text("status")
        if status in _DISPUTE_WON:
            state = stripe_event_pb2.DISPUTE_STATE_WON
        elif status in _DISPUTE_LOST:
            state = stripe_event_pb2.DISPUTE_STATE_LOST
        else:
            raise BadPayload(f"{dispute.path}.status {status!r} is not a closed dispute status")
    payload = stripe_event_pb2.DisputePayload(
        dispute_id=dispute.text("id"),
        charge_id=dispute.ref("charge"),
        payment_intent_id=dispute.ref("payment_intent", required=False),
        amount=dispute.integer("amount"),
        state=state,
    )
    return StripeEvent(
        event_id=head.event_id, type=head.type, create_time=head.create_time, dispute=payload
    )


_HANDLERS: Final[Mapping[str, Callable[[_Head, _Fields], StripeEvent | None]]] = {
    "checkout.session.completed": _checkout_session,
    "checkout.session.async_payment_succeeded": _checkout_session,
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
    "invoice.paid": _invoice,
    "invoice.payment_failed": _invoice,
    "payment_intent.payment_failed": _payment_intent,
    "charge.refunded": _charge,
    "charge.dispute.created": _dispute,
    "charge.dispute.closed": _dispute,
}

HANDLED_TYPES: Final = frozenset(_HANDLERS)
"""The Stripe event types the gateway turns into ApplyStripeEvent calls."""
