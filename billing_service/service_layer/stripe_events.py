"""Applying verified Stripe events: packages granted, subscriptions mirrored, allowances
granted once per period, payment failures, refunds and disputes (DESIGN §1, §4.4).

Every event runs in one transaction under the lock of the account it concerns, and is recorded
by id in the same transaction: a second delivery finds the record and changes nothing. The
gateway's idempotency key ("stripe:" + event id) makes a redelivery replay the first answer.

Order independence, rule by rule:
- a package is granted once per Checkout session (the purchase row), whichever of
  `checkout.session.completed` and `.async_payment_succeeded` says "paid" first;
- a subscription's state changes only for an event at least as new (Subscription.is_newer);
- an allowance period is granted once (the allowance_periods row), with the richest plan seen
  for its billing period, so an upgrade arriving before or after the invoice ends the same;
- refunds compare Stripe's running total (amount_refunded), so an older refund is a no-op;
- a closed dispute outranks an open one of the same dispute.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from billing_service.db import dataclass_json as codec
from billing_service.domain.amounts import format_amount
from billing_service.domain.catalog import CreditPackage, Plan
from billing_service.domain.errors import InvalidField, NotFound
from billing_service.domain.model import EntryContext, GrantSource
from billing_service.domain.purchases import CheckoutOffer, Dispute, Purchase
from billing_service.domain.stripe_events import (
    ChargeRefunded,
    CheckoutCompleted,
    DisputeChanged,
    DisputeState,
    EventOutcome,
    EventResult,
    InvoiceSettled,
    PaymentFailed,
    StripeEvent,
    SubscriptionChanged,
)
from billing_service.domain.subscriptions import (
    GRANTING,
    PAYMENT_OVERDUE,
    STATUS_RANK,
    Subscription,
    SubscriptionStatus,
)
from billing_service.domain.validation import check_id
from billing_service.service_layer import allowances
from billing_service.service_layer.books import OpenBook, open_book, save_book
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.idempotency import Outcome, run_idempotent
from billing_service.service_layer.unit_of_work import Tx

log = logging.getLogger(__name__)

# Invoices that pay for a new billing period; others (prorations, manual) grant nothing.
PERIOD_INVOICES = frozenset({"subscription_create", "subscription_cycle"})


def apply_stripe_event(
    ctx: AppContext, event: StripeEvent, *, idempotency_key: str
) -> Outcome[EventResult]:
    """Apply one verified Stripe event at most once."""
    if not event.event_id.startswith("evt_"):
        raise InvalidField("event.event_id", "must be a Stripe event id (evt_…)")
    check_id(event.event_id, "event.event_id")

    def work(tx: Tx, now: datetime) -> EventResult:
        seen = tx.stripe.event(event.event_id)
        if seen is not None:
            return seen
        result = _dispatch(ctx, tx, event, now)
        tx.stripe.add_event(event.event_id, event.type, event.created, result, now)
        return result

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="ApplyStripeEvent",
        key=idempotency_key,
        request={"event": _as_fingerprinted(event)},
        result_type=EventResult,
        work=work,
    )


def _as_fingerprinted(event: StripeEvent) -> Any:
    """The event as its idempotency fingerprint sees it: without a checkout's package_credits,
    which was added later. Records stored before it keep matching their events (stripe
    reconcile resends them), and so does an event retried through a gateway of the other
    version. A Stripe event never changes, so leaving the field out hides no other request."""
    plain = codec.to_plain(event)
    if isinstance(event.payload, CheckoutCompleted):
        del plain["payload"]["package_credits"]
    return plain


def _dispatch(ctx: AppContext, tx: Tx, event: StripeEvent, now: datetime) -> EventResult:
    payload = event.payload
    if isinstance(payload, CheckoutCompleted):
        return _checkout(tx, event, payload, now)
    if isinstance(payload, SubscriptionChanged):
        return _subscription_changed(ctx, tx, event, payload, now)
    if isinstance(payload, InvoiceSettled):
        return _invoice(ctx, tx, event, payload, now)
    if isinstance(payload, PaymentFailed):
        return _payment_failed(tx, payload)
    if isinstance(payload, ChargeRefunded):
        return _refund(tx, event, payload, now)
    return _dispute(tx, event, payload, now)


# -- accounts ------------------------------------------------------------------------------


def _account_id(tx: Tx, account_id: str, customer_id: str) -> str:
    """The account an event concerns: named in its metadata, or linked to its customer."""
    if account_id:
        return account_id
    linked = tx.accounts.by_stripe_customer(customer_id)
    if linked is None:
        raise NotFound("ACCOUNT", "stripe_customer_id", customer_id or "(none)")
    return linked


def _refresh_freeze(tx: Tx, opened: OpenBook) -> None:
    """Keep the account's frozen sources in step with its disputes and subscriptions."""
    account_id = opened.book.account_id
    frozen: set[GrantSource] = set()
    if tx.stripe.any_open_dispute(account_id):
        frozen.add(GrantSource.PURCHASE)
    if tx.subscriptions.any_frozen(account_id):
        frozen |= allowances.ALLOWANCE_SOURCES
    if frozenset(frozen) != opened.locked.frozen_sources:
        tx.accounts.set_frozen_sources(account_id, frozenset(frozen))
    opened.book.frozen_sources = frozenset(frozen)


# -- packages ------------------------------------------------------------------------------


def _checkout(tx: Tx, event: StripeEvent, session: CheckoutCompleted, now: datetime) -> EventResult:
    # What Creditline sold in this session, if it created it: the offer, not the metadata,
    # says whose it is and what it grants (session metadata can be written by anyone with a
    # Stripe key, while the session id is Stripe's own).
    offer = tx.stripe.checkout_offer(session.session_id) if session.mode == "payment" else None
    if offer is not None:
        account_id = offer.account_id
    else:
        account_id = _account_id(tx, session.account_id, session.customer_id)
    tx.stripe.lock_payment(session.payment_intent_id)  # before the account: see lock_payment
    opened = open_book(tx, account_id, now)
    if session.customer_id:
        tx.accounts.link_stripe_customer(account_id, session.customer_id)
    if session.mode == "subscription":
        if not session.subscription_id:
            raise InvalidField("event.checkout_session.subscription_id", "is required")
        plan = allowances.plan_or_none(tx, session.plan_id)
        _ensure_subscription(
            tx,
            session.subscription_id,
            account_id,
            customer_id=session.customer_id,
            plan=plan,
            now=now,
        )
        save_book(tx, opened)
        return EventResult(
            EventOutcome.APPLIED, f"subscription {session.subscription_id} linked to {account_id}"
        )
    if session.payment_status not in ("paid", "no_payment_required"):
        save_book(tx, opened)
        return EventResult(EventOutcome.IGNORED, "payment not completed yet")
    if tx.stripe.purchase(session.session_id) is not None:
        save_book(tx, opened)
        return EventResult(EventOutcome.IGNORED, f"session {session.session_id} already granted")
    package_id = session.package_id if offer is None else offer.package_id
    item = tx.catalog.get(package_id)
    if not isinstance(item, CreditPackage):
        raise NotFound("CATALOG_ITEM", "package_id", package_id or "(none)")
    if offer is None and not _paid_in_full(session, item):
        save_book(tx, opened)
        return EventResult(
            EventOutcome.IGNORED,
            f"session {session.session_id} paid {session.amount_total} {session.currency or '?'}"
            f", less than {item.id}'s price of {item.unit_amount} {item.currency}, and "
            "CreateCheckoutSession did not create it: not granted",
        )
    credits = _sold_credits(session, offer, item)
    bucket, _ = opened.book.grant(
        source=GrantSource.PURCHASE,
        amount=credits,
        priority=None,
        effective_at=None,
        expires_at=None,
        description=f"{item.name} (Stripe Checkout)",
        metadata={
            "package_id": item.id,
            "stripe_checkout_session": session.session_id,
            "stripe_payment_intent": session.payment_intent_id,
        },
        context=EntryContext(idempotency_key=f"stripe:{event.event_id}"),
    )
    tx.stripe.add_purchase(
        Purchase(
            checkout_session_id=session.session_id,
            account_id=account_id,
            package_id=item.id,
            credits=credits,
            grant_id=bucket.id,
            payment_intent_id=session.payment_intent_id,
            amount_total=session.amount_total,
            currency=session.currency,
            refunded_amount=0,
            clawed_back=0,
            created_at=now,
        )
    )
    save_book(tx, opened)
    _unpark(tx, session.payment_intent_id, now)
    return EventResult(
        EventOutcome.APPLIED,
        f"granted {format_amount(credits)} credits of {item.id} to {account_id}",
        (bucket.id,),
    )


def _paid_in_full(session: CheckoutCompleted, item: CreditPackage) -> bool:
    """Whether a session Creditline holds no offer for paid at least the package's price, in
    its currency. Such a session (a Payment Link, one made with a Stripe key) names its package
    in metadata anyone with a Stripe key can write; without this, a $1 session could name the
    dearest package. A shortfall is logged as an error: a buyer may be owed credits (a session
    made before an upgrade, paid after a price rise), which an operator grants by hand."""
    if session.currency == item.currency and session.amount_total >= item.unit_amount:
        return True
    log.error(
        "checkout session without an offer paid less than its package's price; not granted",
        extra={
            "session_id": session.session_id,
            "package_id": item.id,
            "amount_total": session.amount_total,
            "currency": session.currency,
            "unit_amount": item.unit_amount,
            "package_currency": item.currency,
        },
    )
    return False


def _sold_credits(
    session: CheckoutCompleted, offer: CheckoutOffer | None, item: CreditPackage
) -> int:
    """The credits a paid package session grants: what Creditline offered when it created the
    session; for a session it holds no offer for (created before offers were recorded, or
    outside Creditline, such as a Payment Link), the package's current credits. The session's
    own metadata is only compared, and a difference logged: trusting it would let anyone able
    to write metadata name their own amount."""
    credits = item.credits if offer is None else offer.credits
    differs = offer is not None and (
        offer.account_id != session.account_id or offer.package_id != session.package_id
    )
    if differs or session.package_credits not in (None, credits):
        log.warning(
            "checkout session metadata differs from what was sold; granting what was sold",
            extra={
                "session_id": session.session_id,
                "metadata_account_id": session.account_id,
                "metadata_package_id": session.package_id,
                "metadata_credits": None
                if session.package_credits is None
                else format_amount(session.package_credits),
                "granted_credits": format_amount(credits),
                "offer_recorded": offer is not None,
            },
        )
    return credits


def _park(tx: Tx, event: StripeEvent, payment_intent_id: str, now: datetime) -> EventResult:
    """Keep a refund or dispute that came before its purchase; the purchase applies it."""
    if not payment_intent_id:
        return EventResult(EventOutcome.IGNORED, "no payment intent: not a package purchase")
    kind = "refund" if isinstance(event.payload, ChargeRefunded) else "dispute"
    text = json.dumps(
        {
            "kind": kind,
            "event_id": event.event_id,
            "type": event.type,
            "created": event.created.isoformat(),
            "payload": codec.dumps(event.payload),
        }
    )
    tx.stripe.park(event.event_id, payment_intent_id, text, now)
    return EventResult(
        EventOutcome.IGNORED,
        f"no package purchase paid by {payment_intent_id} yet: kept until one arrives",
    )


def _unpark(tx: Tx, payment_intent_id: str, now: datetime) -> None:
    """Apply what came early for a purchase that has just been recorded."""
    if not payment_intent_id:
        return
    for text in tx.stripe.unpark(payment_intent_id):
        parked = json.loads(text)
        created = datetime.fromisoformat(parked["created"])
        if parked["kind"] == "refund":
            refund = codec.loads(ChargeRefunded, parked["payload"])
            early = StripeEvent(parked["event_id"], parked["type"], created, refund)
            _refund(tx, early, refund, now)
        else:
            dispute = codec.loads(DisputeChanged, parked["payload"])
            early = StripeEvent(parked["event_id"], parked["type"], created, dispute)
            _dispute(tx, early, dispute, now)


def _refund(tx: Tx, event: StripeEvent, charge: ChargeRefunded, now: datetime) -> EventResult:
    tx.stripe.lock_payment(charge.payment_intent_id)
    purchase = tx.stripe.purchase_by_payment_intent(charge.payment_intent_id)
    if purchase is None:
        return _park(tx, event, charge.payment_intent_id, now)
    opened = open_book(tx, purchase.account_id, now)
    refunded = min(charge.amount_refunded, charge.amount)
    if refunded <= purchase.refunded_amount:
        save_book(tx, opened)
        return EventResult(EventOutcome.STALE, "a refund at least this large was applied")
    # The refunded share of the package's unspent credits: this refund's part of what was
    # still unrefunded, applied to what is left of the package now, rounded down. A full
    # refund takes all that is left, however it was split; spent credits stay spent.
    opened.book.add_buckets(tx.buckets.by_ids([purchase.grant_id]))
    bucket = opened.book.buckets.get(purchase.grant_id)
    left = bucket.unheld if bucket is not None else 0
    share = (
        left * (refunded - purchase.refunded_amount) // (charge.amount - purchase.refunded_amount)
    )
    entry = opened.book.take_back(
        purchase.grant_id,
        share,
        EntryContext(
            idempotency_key=f"stripe:{event.event_id}",
            metadata={"reason": "refund", "stripe_charge": charge.charge_id},
        ),
    )
    taken = -entry.amount if entry else 0
    tx.stripe.save_refund(
        purchase.checkout_session_id,
        refunded_amount=refunded,
        clawed_back=purchase.clawed_back + taken,
    )
    save_book(tx, opened)
    return EventResult(
        EventOutcome.APPLIED, f"clawed back {format_amount(taken)} credits of {purchase.grant_id}"
    )


def _dispute(tx: Tx, event: StripeEvent, change: DisputeChanged, now: datetime) -> EventResult:
    tx.stripe.lock_payment(change.payment_intent_id)
    purchase = tx.stripe.purchase_by_payment_intent(change.payment_intent_id)
    known = tx.stripe.dispute(change.dispute_id)
    if known is not None:
        account_id = known.account_id
    elif purchase is not None:
        account_id = purchase.account_id
    else:
        return _park(tx, event, change.payment_intent_id, now)
    opened = open_book(tx, account_id, now)
    rank = 0 if change.state is DisputeState.OPEN else 1
    if known is not None:
        known_rank = 0 if known.state is DisputeState.OPEN else 1
        if (event.created, rank) < (known.state_event_at, known_rank):
            save_book(tx, opened)
            return EventResult(EventOutcome.STALE, "a newer state of the dispute was applied")
    tx.stripe.put_dispute(
        Dispute(
            id=change.dispute_id,
            account_id=account_id,
            payment_intent_id=change.payment_intent_id,
            charge_id=change.charge_id,
            state=change.state,
            state_event_at=event.created,
            created_at=known.created_at if known else now,
            updated_at=now,
        ),
        new=known is None,
    )
    detail = f"dispute {change.dispute_id} {change.state.value.lower()}"
    if change.state is DisputeState.LOST and purchase is not None:
        opened.book.add_buckets(tx.buckets.by_ids([purchase.grant_id]))
        entry = opened.book.take_back(
            purchase.grant_id,
            purchase.credits,
            EntryContext(
                idempotency_key=f"stripe:{event.event_id}",
                metadata={"reason": "dispute lost", "stripe_dispute": change.dispute_id},
            ),
        )
        taken = -entry.amount if entry else 0
        tx.stripe.save_refund(
            purchase.checkout_session_id,
            refunded_amount=purchase.refunded_amount,
            clawed_back=purchase.clawed_back + taken,
        )
        detail += f"; clawed back {format_amount(taken)} credits"
    _refresh_freeze(tx, opened)
    save_book(tx, opened)
    return EventResult(EventOutcome.APPLIED, detail)


def _payment_failed(tx: Tx, failure: PaymentFailed) -> EventResult:
    account = failure.account_id or tx.accounts.by_stripe_customer(failure.customer_id) or "?"
    return EventResult(
        EventOutcome.APPLIED,
        f"payment {failure.payment_intent_id} of account {account} failed: "
        f"{failure.failure_message[:200]}",
    )


# -- subscriptions -------------------------------------------------------------------------


def _plan_for_price(tx: Tx, price_id: str, lookup_key: str) -> Plan | None:
    item = tx.catalog.by_stripe_price(price_id, lookup_key)
    return item if isinstance(item, Plan) else None


def _ensure_subscription(
    tx: Tx,
    subscription_id: str,
    account_id: str,
    *,
    customer_id: str,
    plan: Plan | None,
    now: datetime,
) -> Subscription:
    """The subscription's row, created (status unknown until a subscription event) if new."""
    found = tx.subscriptions.get(subscription_id, lock=True)
    if found is not None:
        return found
    subscription = Subscription(
        id=subscription_id,
        account_id=account_id,
        stripe_customer_id=customer_id,
        stripe_plan_id=plan.id if plan else "",
        status=SubscriptionStatus.INCOMPLETE,
        state_event_at=None,
        state_rank=0,
        current_period_start=None,
        current_period_end=None,
        cancel_at_period_end=False,
        canceled_at=None,
        ended_at=None,
        allowance_frozen=False,
        paid_through=None,
        next_allowance_at=None,
        created_at=now,
        updated_at=now,
    )
    tx.subscriptions.add(subscription)
    return subscription


def _set_state(
    ctx: AppContext, subscription: Subscription, at: datetime, status: SubscriptionStatus
) -> Subscription:
    """The subscription with Stripe's status as of an event at `at` (frozen if overdue and
    so configured)."""
    frozen = ctx.billing.freeze_allowance_when_past_due and status in PAYMENT_OVERDUE
    return replace(
        subscription,
        status=status,
        state_event_at=at,
        state_rank=STATUS_RANK[status],
        allowance_frozen=frozen,
    )


def _subscription_changed(
    ctx: AppContext, tx: Tx, event: StripeEvent, change: SubscriptionChanged, now: datetime
) -> EventResult:
    plan = _plan_for_price(tx, change.price_id, change.lookup_key)
    if plan is None:
        raise NotFound("CATALOG_ITEM", "price_id", change.price_id or change.lookup_key)
    account_id = _account_id(tx, change.account_id, change.customer_id)
    opened = open_book(tx, account_id, now)
    subscription = _ensure_subscription(
        tx, change.subscription_id, account_id, customer_id=change.customer_id, plan=plan, now=now
    )
    was_canceled = subscription.status is SubscriptionStatus.CANCELED
    allowances.see_plan(tx, subscription, plan, change.period_start, now)
    outcome = EventOutcome.STALE
    if subscription.is_newer(event.created, change.status):
        outcome = EventOutcome.APPLIED
        subscription = replace(
            _set_state(ctx, subscription, event.created, change.status),
            stripe_plan_id=plan.id,
            stripe_customer_id=change.customer_id or subscription.stripe_customer_id,
            current_period_start=change.period_start,
            current_period_end=change.period_end,
            cancel_at_period_end=change.cancel_at_period_end,
            canceled_at=change.canceled_at,
            ended_at=change.ended_at,
        )
        subscription = allowances.resume_drops(tx, subscription, now)
    grants = allowances.raise_for_upgrade(
        tx, opened, subscription, billing_start=change.period_start, event=event, now=now
    )
    if subscription.status is SubscriptionStatus.CANCELED and subscription.ended_at:
        subscription = replace(subscription, next_allowance_at=None)
        if not was_canceled:
            allowances.end_allowance(tx, opened, subscription, event)
    tx.subscriptions.save(replace(subscription, updated_at=now))
    _refresh_freeze(tx, opened)
    save_book(tx, opened)
    detail = f"subscription {change.subscription_id}: {subscription.status.value.lower()}"
    if grants:
        return EventResult(EventOutcome.APPLIED, f"{detail}, upgrade granted", grants)
    if outcome is EventOutcome.STALE:
        detail = "a newer state of the subscription was applied"
    return EventResult(outcome, detail)


def _invoice(
    ctx: AppContext, tx: Tx, event: StripeEvent, invoice: InvoiceSettled, now: datetime
) -> EventResult:
    if not invoice.subscription_id:
        return EventResult(EventOutcome.IGNORED, "not a subscription invoice")
    account_id = _account_id(tx, invoice.account_id, invoice.customer_id)
    opened = open_book(tx, account_id, now)
    plan = _plan_for_price(tx, invoice.price_id, invoice.lookup_key)
    subscription = _ensure_subscription(
        tx, invoice.subscription_id, account_id, customer_id=invoice.customer_id, plan=plan, now=now
    )
    status = SubscriptionStatus.ACTIVE if invoice.paid else SubscriptionStatus.PAST_DUE
    changed = False
    if subscription.is_newer(event.created, status) and (
        invoice.paid or subscription.status in GRANTING
    ):
        subscription = _set_state(ctx, subscription, event.created, status)
        changed = True
    grants: tuple[str, ...] = ()
    if invoice.paid and _pays_a_period(invoice):
        if invoice.period_start is None or invoice.period_end is None:
            raise InvalidField("event.invoice.period_start_time", "is required for a paid period")
        if plan is not None:
            allowances.see_plan(tx, subscription, plan, invoice.period_start, now)
        subscription, grants = allowances.pay_period(
            tx,
            opened,
            subscription,
            start=invoice.period_start,
            end=invoice.period_end,
            event=event,
            now=now,
        )
        changed = True
    tx.subscriptions.save(replace(subscription, updated_at=now))
    _refresh_freeze(tx, opened)
    save_book(tx, opened)
    if invoice.paid:
        detail = f"invoice {invoice.invoice_id} paid"
        if grants:
            detail += f"; allowance granted ({len(grants)} bucket(s))"
    else:
        detail = f"invoice {invoice.invoice_id} payment failed; subscription past due"
        if subscription.allowance_frozen:
            detail += ", allowance frozen"
    return EventResult(EventOutcome.APPLIED if changed else EventOutcome.STALE, detail, grants)


def _pays_a_period(invoice: InvoiceSettled) -> bool:
    """Whether an invoice charges a whole new billing period: a first or renewal invoice, or a
    plan change that restarts the period (monthly to yearly) whose line is no proration."""
    if invoice.billing_reason in PERIOD_INVOICES:
        return True
    return invoice.billing_reason == "subscription_update" and not invoice.proration
