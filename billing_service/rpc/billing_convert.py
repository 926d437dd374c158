"""Messages of the catalog, subscriptions and Stripe events, to and from the domain's values."""

from __future__ import annotations

import logging
import re
from datetime import datetime

from creditline.v1 import catalog_pb2, stripe_event_pb2, subscription_pb2
from google.protobuf.message import Message

from billing_service.domain.amounts import format_amount, parse_amount
from billing_service.domain.catalog import CreditPackage, Interval, Plan
from billing_service.domain.errors import InvalidField
from billing_service.domain.stripe_events import (
    ChargeRefunded,
    CheckoutCompleted,
    DisputeChanged,
    DisputeState,
    EventResult,
    InvoiceSettled,
    Payload,
    PaymentFailed,
    StripeEvent,
    SubscriptionChanged,
)
from billing_service.domain.subscriptions import Subscription, SubscriptionStatus
from billing_service.domain.validation import MAX_TEXT, check_id
from billing_service.rpc import wire
from billing_service.rpc.convert import balance_out
from billing_service.service_layer.billing import EntitlementsView

log = logging.getLogger(__name__)

_INTERVAL = {
    Interval.MONTH: catalog_pb2.BILLING_INTERVAL_MONTH,
    Interval.YEAR: catalog_pb2.BILLING_INTERVAL_YEAR,
}


def package_out(item: CreditPackage) -> catalog_pb2.CreditPackage:
    """The API form of a credit package."""
    return catalog_pb2.CreditPackage(
        package_id=item.id,
        name=item.name,
        credits=format_amount(item.credits),
        unit_amount=item.unit_amount,
        currency=item.currency,
        lookup_key=item.lookup_key,
        stripe_price_id=item.stripe_price_id,
        active=item.active,
    )


def plan_out(item: Plan) -> catalog_pb2.Plan:
    """The API form of a plan."""
    return catalog_pb2.Plan(
        plan_id=item.id,
        name=item.name,
        interval=_INTERVAL[item.interval],
        monthly_credits=format_amount(item.monthly_credits),
        unit_amount=item.unit_amount,
        currency=item.currency,
        renewal_policy=wire.enum_out("RENEWAL_POLICY", item.renewal_policy),  # type: ignore[arg-type]
        rollover_cap="" if item.rollover_cap is None else format_amount(item.rollover_cap),
        lookup_key=item.lookup_key,
        stripe_price_id=item.stripe_price_id,
        active=item.active,
    )


def subscription_out(
    item: Subscription, *, plan_id: str = "", pending_plan_id: str = ""
) -> subscription_pb2.Subscription:
    """The API form of a mirrored subscription."""
    message = subscription_pb2.Subscription(
        subscription_id=item.id,
        account_id=item.account_id,
        stripe_customer_id=item.stripe_customer_id,
        plan_id=plan_id or item.stripe_plan_id,
        status=wire.enum_out("SUBSCRIPTION_STATUS", item.status),  # type: ignore[arg-type]
        cancel_at_period_end=item.cancel_at_period_end,
        pending_plan_id=pending_plan_id,
        allowance_frozen=item.allowance_frozen,
    )
    wire.time_out(item.current_period_start, message.current_period_start_time)
    wire.time_out(item.current_period_end, message.current_period_end_time)
    wire.time_out(item.canceled_at, message.cancel_time)
    wire.time_out(item.ended_at, message.end_time)
    wire.time_out(item.next_allowance_at, message.next_allowance_time)
    wire.time_out(item.state_event_at, message.last_event_time)
    return message


def entitlements_out(view: EntitlementsView) -> subscription_pb2.Entitlements:
    """The API form of an account's entitlements."""
    message = subscription_pb2.Entitlements(
        account_id=view.account_id,
        allowance_granted=format_amount(
            (view.period.credits + view.period.carried) if view.period else 0
        ),
        allowance_remaining=format_amount(view.allowance_remaining),
        balance=balance_out(view.balance),
    )
    if view.subscription is not None:
        plan_id = view.plan.id if view.plan else view.subscription.stripe_plan_id
        pending = view.subscription.stripe_plan_id
        message.subscription.CopyFrom(
            subscription_out(
                view.subscription,
                plan_id=plan_id,
                pending_plan_id=pending if pending and pending != plan_id else "",
            )
        )
    if view.plan is not None:
        message.plan.CopyFrom(plan_out(view.plan))
    if view.period is not None:
        wire.time_out(view.period.period_start, message.allowance_period_start_time)
    return message


def event_in(message: stripe_event_pb2.StripeEvent) -> StripeEvent:
    """A verified Stripe event as the use case takes it."""
    if not message.event_id:
        raise InvalidField("event.event_id", "is required")
    created = wire.time_in(message.create_time, message.HasField("create_time"), "event")
    if created is None:
        raise InvalidField("event.create_time", "is required")
    return StripeEvent(message.event_id, message.type, created, _payload(message))


def _payload(message: stripe_event_pb2.StripeEvent) -> Payload:
    kind = message.WhichOneof("payload")
    if kind is not None:
        _check_fields(getattr(message, kind), f"event.{kind}")
    if kind == "checkout_session":
        c = message.checkout_session
        _require(c.session_id, "event.checkout_session.session_id")
        if c.mode not in _MODES:
            raise InvalidField("event.checkout_session.mode", "must be payment or subscription")
        return CheckoutCompleted(
            session_id=c.session_id,
            mode=c.mode,
            payment_status=c.payment_status,
            customer_id=c.customer_id,
            account_id=c.account_id,
            package_id=c.package_id,
            plan_id=c.plan_id,
            payment_intent_id=c.payment_intent_id,
            subscription_id=c.subscription_id,
            amount_total=c.amount_total,
            currency=c.currency,
            package_credits=_offered_credits(c),
        )
    if kind == "subscription":
        s = message.subscription
        _require(s.subscription_id, "event.subscription.subscription_id")
        status = wire.enum_in(
            SubscriptionStatus,
            "SUBSCRIPTION_STATUS",
            s.status,
            "event.subscription.status",
            required=True,
        )
        assert status is not None
        return SubscriptionChanged(
            subscription_id=s.subscription_id,
            customer_id=s.customer_id,
            account_id=s.account_id,
            price_id=s.price_id,
            lookup_key=s.lookup_key,
            status=status,
            period_start=_time(s, "current_period_start_time"),
            period_end=_time(s, "current_period_end_time"),
            cancel_at_period_end=s.cancel_at_period_end,
            canceled_at=_time(s, "cancel_time"),
            ended_at=_time(s, "end_time"),
        )
    if kind == "invoice":
        i = message.invoice
        _require(i.invoice_id, "event.invoice.invoice_id")
        return InvoiceSettled(
            invoice_id=i.invoice_id,
            customer_id=i.customer_id,
            subscription_id=i.subscription_id,
            account_id=i.account_id,
            price_id=i.price_id,
            lookup_key=i.lookup_key,
            period_start=_time(i, "period_start_time"),
            period_end=_time(i, "period_end_time"),
            billing_reason=i.billing_reason,
            paid=i.paid,
            amount_paid=i.amount_paid,
            proration=i.proration,
        )
    if kind == "payment_intent":
        p = message.payment_intent
        _require(p.payment_intent_id, "event.payment_intent.payment_intent_id")
        return PaymentFailed(p.payment_intent_id, p.customer_id, p.account_id, p.failure_message)
    if kind == "charge":
        c2 = message.charge
        _require(c2.charge_id, "event.charge.charge_id")  # _check_fields refused negatives
        return ChargeRefunded(
            c2.charge_id, c2.payment_intent_id, c2.customer_id, c2.amount, c2.amount_refunded
        )
    if kind == "dispute":
        d = message.dispute
        _require(d.dispute_id, "event.dispute.dispute_id")
        state = wire.enum_in(
            DisputeState, "DISPUTE_STATE", d.state, "event.dispute.state", required=True
        )
        assert state is not None
        return DisputeChanged(d.dispute_id, d.charge_id, d.payment_intent_id, d.amount, state)
    raise InvalidField("event.payload", "is required")


def result_out(result: EventResult) -> tuple[int, str, list[str]]:
    """The outcome number, detail and grant ids of an applied event."""
    return (
        wire.enum_out("STRIPE_EVENT_OUTCOME", result.outcome),
        result.detail,
        list(result.grant_ids),
    )


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidField(field, "is required")


_STRIPE_ID = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)
_MODES = frozenset({"payment", "subscription"})


def _offered_credits(session: stripe_event_pb2.CheckoutSessionPayload) -> int | None:
    """The credits a package session's metadata names, or None: none named, not a package,
    or a value this service would never have written (logged). Only compared with what is
    granted, which comes from the offer recorded when the session was created; a paid
    purchase is never refused for its metadata."""
    if not session.package_credits or session.mode != "payment":
        return None
    try:
        return parse_amount(session.package_credits, "event.checkout_session.package_credits")
    except InvalidField as error:
        log.warning(
            "checkout session credits metadata unreadable; ignored",
            extra={"session_id": session.session_id, "error": error.message},
        )
        return None


def _check_fields(message: Message, path: str) -> None:
    """Refuse what no real Stripe event holds, naming the field, before anything is stored:
    ids that are not 1-255 printable characters, over-long text, negative amounts, and
    periods that end before they start."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}"
        if field.name == "account_id":
            check_id(value, name)
        elif field.name.endswith("_id") and not _STRIPE_ID.fullmatch(value):
            raise InvalidField(name, "must be 1 to 255 printable ASCII characters, no spaces")
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            raise InvalidField(name, f"must be at most {MAX_TEXT} characters")
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise InvalidField(name, "must not be negative")
    for start, end in (
        ("current_period_start_time", "current_period_end_time"),
        ("period_start_time", "period_end_time"),
    ):
        if (
            start in message.DESCRIPTOR.fields_by_name
            and message.HasField(start)
            and message.HasField(end)
            and getattr(message, end).ToDatetime() <= getattr(message, start).ToDatetime()
        ):
            raise InvalidField(f"{path}.{end}", f"must be later than {start}")


def _time(message: Message, name: str) -> datetime | None:
    return wire.time_in(getattr(message, name), message.HasField(name), name)
