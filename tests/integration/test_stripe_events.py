"""Stripe events applied through the use case, on both databases: packages, subscription
allowances under each renewal policy, yearly monthly drops, upgrades and downgrades,
cancellation, payment failure, refunds, disputes, and delivery in any order or twice.

The events are the use case's own values here; the webhook gateway's translation from Stripe's
wire format is tested in tests/gateway, and the whole path end to end in tests/e2e.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from billing_service.catalog.commands import seed_default_catalog
from billing_service.db import dataclass_json as codec
from billing_service.db.idempotency import IdempotencyRecord
from billing_service.domain.amounts import parse_amount
from billing_service.domain.catalog import CreditPackage
from billing_service.domain.clock import ManualClock
from billing_service.domain.errors import FailedPrecondition, NotFound
from billing_service.domain.model import BillingMode, GrantSource
from billing_service.domain.stripe_events import (
    ChargeRefunded,
    CheckoutCompleted,
    DisputeChanged,
    DisputeState,
    EventOutcome,
    EventResult,
    InvoiceSettled,
    Payload,
    PaymentFailed,
    StripeEvent,
    SubscriptionChanged,
)
from billing_service.domain.subscriptions import SubscriptionStatus, add_months
from billing_service.service_layer import (
    accounts,
    allowances,
    billing,
    credits,
    queries,
    stripe_events,
)
from billing_service.service_layer.context import AppContext, BillingPolicy
from billing_service.service_layer.unit_of_work import Tx
from tests.fakes.stripe_port import RecordingStripe
from tests.helpers import ledger_sum

START = datetime(2026, 1, 15, tzinfo=UTC)
ACCOUNT = "acct_1"
CUSTOMER = "cus_1"
_ids = itertools.count(1)


def credits_(text: str) -> int:
    return parse_amount(text, "amount", allow_zero=True)


@pytest.fixture
def shop(ctx: AppContext, clock: ManualClock) -> AppContext:
    """The default catalog with Stripe prices ids (price_<item id>) and one account."""
    clock.set(START)
    seed_default_catalog(ctx.db, clock)
    ctx.db.write(lambda tx: _price_ids(tx, clock))
    open_account(ctx, ACCOUNT)
    return ctx


def open_account(ctx: AppContext, account_id: str) -> None:
    accounts.create_account(
        ctx,
        account_id=account_id,
        billing_mode=BillingMode.PREPAID,
        stripe_customer_id="",
        parent_id="",
        low_balance_threshold=None,
        metadata={},
        idempotency_key=f"create-{account_id}",
    )


def _price_ids(tx, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    for item in tx.catalog.all():
        tx.catalog.set_stripe_ids(
            item.id, product_id=f"prod_{item.id}", price_id=f"price_{item.id}", now=clock.now()
        )


def event(payload: Payload, at: datetime, event_type: str = "", event_id: str = "") -> StripeEvent:
    return StripeEvent(event_id or f"evt_{next(_ids)}", event_type or "test", at, payload)


def apply(ctx: AppContext, ev: StripeEvent) -> EventResult:
    return stripe_events.apply_stripe_event(ctx, ev, idempotency_key=f"stripe:{ev.event_id}").result


def checkout(session: str, *, paid: bool = True, package: str = "pack_500") -> CheckoutCompleted:
    return CheckoutCompleted(
        session_id=session,
        mode="payment",
        payment_status="paid" if paid else "unpaid",
        customer_id=CUSTOMER,
        account_id=ACCOUNT,
        package_id=package,
        plan_id="",
        payment_intent_id=f"pi_{session}",
        subscription_id="",
        amount_total=500,
        currency="usd",
    )


def sub_change(
    plan: str,
    status: SubscriptionStatus,
    start: datetime,
    end: datetime,
    *,
    sub: str = "sub_1",
    ended: datetime | None = None,
) -> SubscriptionChanged:
    return SubscriptionChanged(
        subscription_id=sub,
        customer_id=CUSTOMER,
        account_id=ACCOUNT,
        price_id=f"price_{plan}",
        lookup_key=f"creditline_{plan}",
        status=status,
        period_start=start,
        period_end=end,
        cancel_at_period_end=False,
        canceled_at=ended,
        ended_at=ended,
    )


def invoice(
    plan: str,
    start: datetime,
    end: datetime,
    *,
    paid: bool = True,
    sub: str = "sub_1",
    reason: str = "subscription_cycle",
) -> InvoiceSettled:
    return InvoiceSettled(
        invoice_id=f"in_{next(_ids)}",
        customer_id=CUSTOMER,
        subscription_id=sub,
        account_id=ACCOUNT,
        price_id=f"price_{plan}",
        lookup_key="",
        period_start=start,
        period_end=end,
        billing_reason=reason,
        paid=paid,
        amount_paid=2000 if paid else 0,
    )


def balance(ctx: AppContext) -> tuple[int, int]:
    view = queries.get_balance(ctx, ACCOUNT)
    return view.balance, view.available


def spend(ctx: AppContext, amount: str) -> None:
    credits.spend_credits(
        ctx,
        account_id=ACCOUNT,
        amount=credits_(amount),
        feature="",
        request_id="",
        metadata={},
        idempotency_key=f"spend-{next(_ids)}",
    )


def state(ctx: AppContext, engine: Engine, account: str = ACCOUNT) -> dict[str, object]:
    """Everything an event order could change, for comparing two deliveries."""
    view = queries.get_balance(ctx, account)
    subs = ctx.db.read(lambda tx: tx.subscriptions.of_account(account))
    periods = ctx.db.read(
        lambda tx: [
            (p.period_start, p.plan_id, p.credits)
            for s in subs
            for p in [tx.subscriptions.latest_period(s.id)]
            if p
        ]
    )
    by_source: dict[str, int] = {}
    for bucket in view.buckets:
        by_source[bucket.source.value] = by_source.get(bucket.source.value, 0) + bucket.remaining
    expiries = sorted(
        (b.source.value, b.expires_at.isoformat() if b.expires_at else "never")
        for b in view.buckets
    )
    return {
        "balance": view.balance,
        "available": view.available,
        "ledger": ledger_sum(engine, account),
        "by_source": by_source,
        "expiries": expiries,
        "subs": [
            (
                s.status,
                s.current_period_start,
                s.current_period_end,
                s.stripe_plan_id,
                s.ended_at,
                s.cancel_at_period_end,
            )
            for s in subs
        ],
        "periods": periods,
    }


# -- packages --------------------------------------------------------------------------------


def test_a_paid_checkout_grants_the_package_once(shop: AppContext, engine: Engine) -> None:
    ev = event(checkout("cs_1"), START, "checkout.session.completed")
    first = apply(shop, ev)
    assert first.outcome is EventOutcome.APPLIED and len(first.grant_ids) == 1
    assert balance(shop) == (credits_("500"), credits_("500"))
    again = stripe_events.apply_stripe_event(shop, ev, idempotency_key=f"stripe:{ev.event_id}")
    assert again.replayed and balance(shop) == (credits_("500"), credits_("500"))
    # The same event under another key (as reconcile might send) still changes nothing.
    other_key = stripe_events.apply_stripe_event(shop, ev, idempotency_key="reconcile-1")
    assert other_key.result.outcome is EventOutcome.APPLIED
    assert balance(shop) == (credits_("500"), credits_("500"))
    assert ledger_sum(engine, ACCOUNT) == credits_("500")
    grant = queries.get_balance(shop, ACCOUNT).buckets[0]
    assert grant.source is GrantSource.PURCHASE and grant.expires_at is None
    account = shop.db.read(lambda tx: tx.accounts.get(ACCOUNT))
    assert account is not None and account.stripe_customer_id == CUSTOMER


def test_a_delayed_payment_grants_on_async_success_and_only_once(shop: AppContext) -> None:
    pending = apply(shop, event(checkout("cs_2", paid=False), START))
    assert pending.outcome is EventOutcome.IGNORED and balance(shop) == (0, 0)
    succeeded = apply(shop, event(checkout("cs_2"), START + timedelta(minutes=5)))
    assert succeeded.outcome is EventOutcome.APPLIED
    late_completed = apply(shop, event(checkout("cs_2"), START + timedelta(minutes=6)))
    assert late_completed.outcome is EventOutcome.IGNORED
    assert balance(shop)[0] == credits_("500")


def test_an_unknown_package_or_account_is_refused_and_changes_nothing(
    shop: AppContext, engine: Engine
) -> None:
    with pytest.raises(NotFound) as missing:
        apply(shop, event(checkout("cs_3", package="pack_nope"), START))
    assert missing.value.reason == "CATALOG_ITEM_NOT_FOUND"
    with pytest.raises(NotFound) as stranger:
        apply(shop, event(replace(checkout("cs_4"), account_id="", customer_id="cus_x"), START))
    assert stranger.value.reason == "ACCOUNT_NOT_FOUND"
    assert balance(shop) == (0, 0)
    assert shop.db.read(lambda tx: tx.stripe.purchase("cs_3")) is None


# What a session was created to sell is what it grants: the offer CreateCheckoutSession
# records, never the session's metadata (anyone holding a Stripe key can write metadata).

OTHER = "acct_other"


@pytest.fixture
def seller(shop: AppContext) -> AppContext:
    """The shop with a Stripe port that answers like Stripe, and a second account."""
    open_account(shop, OTHER)
    return replace(shop, stripe=RecordingStripe())


def sell(ctx: AppContext, package: str, key: str) -> str:
    """CreateCheckoutSession for ACCOUNT as a caller runs it; returns the session id."""
    result = billing.create_checkout_session(
        ctx,
        account_id=ACCOUNT,
        package_id=package,
        plan_id="",
        success_url="https://app.example/ok",
        cancel_url="https://app.example/cancel",
        idempotency_key=key,
    )
    return result.session.id


def reprice(ctx: AppContext, package: str, credits: str) -> None:
    """A catalog push changing a package's credits."""

    def change(tx: Tx) -> None:
        item = tx.catalog.get(package)
        assert isinstance(item, CreditPackage)
        tx.catalog.upsert(replace(item, credits=credits_(credits)), START)

    ctx.db.write(change)


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"package_credits": credits_("1000000000")},
        {"package_id": "pack_2000"},
        {"account_id": OTHER},
        {"account_id": OTHER, "package_id": "pack_2000", "package_credits": credits_("1000")},
    ],
    ids=["as-written", "more-credits", "dearer-package", "other-account", "all-three"],
)
def test_a_session_grants_what_it_was_created_to_sell_whatever_its_metadata_says(
    seller: AppContext, engine: Engine, metadata: dict[str, object]
) -> None:
    session_id = sell(seller, "pack_500", "buy-500")
    reprice(seller, "pack_500", "1000")  # a push while the buyer pays: they paid for 500
    completed = replace(checkout(session_id), **metadata)  # type: ignore[arg-type]

    result = apply(seller, event(completed, START, "checkout.session.completed"))

    assert result.outcome is EventOutcome.APPLIED
    assert balance(seller) == (credits_("500"), credits_("500"))
    assert queries.get_balance(seller, OTHER).balance == 0
    assert ledger_sum(engine, ACCOUNT) == credits_("500") and ledger_sum(engine, OTHER) == 0
    purchase = seller.db.read(lambda tx: tx.stripe.purchase(session_id))
    assert purchase is not None
    assert (purchase.account_id, purchase.package_id, purchase.credits) == (
        ACCOUNT,
        "pack_500",
        credits_("500"),
    )


def test_a_session_creditline_did_not_create_grants_the_catalogs_credits_not_its_metadatas(
    seller: AppContext,
) -> None:
    # A Payment Link or a session made with a Stripe key: no offer, so the package's credits.
    forged = replace(checkout("cs_elsewhere"), package_credits=credits_("1000000000"))
    assert apply(seller, event(forged, START)).outcome is EventOutcome.APPLIED
    assert balance(seller) == (credits_("500"), credits_("500"))


@pytest.mark.parametrize(
    ("package", "amount_total", "currency"),
    [("pack_2000", 500, "usd"), ("pack_500", 499, "usd"), ("pack_500", 500, "eur")],
    ids=["dearer-package", "short-by-a-cent", "other-currency"],
)
def test_a_session_creditline_did_not_create_that_paid_less_than_its_package_grants_nothing(
    seller: AppContext, engine: Engine, package: str, amount_total: int, currency: str
) -> None:
    # Its metadata names the package, and anyone with a Stripe key can write metadata.
    forged = replace(
        checkout("cs_cheap", package=package), amount_total=amount_total, currency=currency
    )
    result = apply(seller, event(forged, START))
    assert result.outcome is EventOutcome.IGNORED and "not granted" in result.detail
    # Stripe's second word on the same session changes nothing either.
    assert apply(seller, event(forged, START + timedelta(minutes=1))).outcome is (
        EventOutcome.IGNORED
    )
    assert balance(seller) == (0, 0) and ledger_sum(engine, ACCOUNT) == 0
    assert seller.db.read(lambda tx: tx.stripe.purchase("cs_cheap")) is None


def test_a_retried_checkout_gets_its_session_and_keeps_its_one_offer(
    seller: AppContext, engine: Engine
) -> None:
    first = sell(seller, "pack_500", "buy-once")
    again = sell(seller, "pack_500", "buy-once")  # Stripe answers with the same session

    assert again == first
    assert offer_count(engine) == 1
    offer = seller.db.read(lambda tx: tx.stripe.checkout_offer(first))
    assert offer is not None and (offer.account_id, offer.credits) == (ACCOUNT, credits_("500"))


def test_a_checkout_retried_after_a_push_changed_its_package_is_refused_by_stripe(
    seller: AppContext,
) -> None:
    first = sell(seller, "pack_500", "buy-once")
    reprice(seller, "pack_500", "1000")
    # The retry asks Stripe for other metadata under the same key, which Stripe refuses.
    with pytest.raises(FailedPrecondition) as refused:
        sell(seller, "pack_500", "buy-once")
    assert refused.value.reason == "STRIPE_REQUEST_REJECTED"
    # The first session still grants what it sold.
    apply(seller, event(checkout(first), START))
    assert balance(seller)[0] == credits_("500")


def offer_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM checkout_offers")).scalar_one())


def test_concurrent_retries_of_one_checkout_record_one_offer(seller: AppContext) -> None:
    callers = 8
    start = threading.Barrier(callers)

    def buy() -> str:
        start.wait()
        return sell(seller, "pack_100", "buy-race")

    with ThreadPoolExecutor(callers) as pool:
        sessions = set(pool.map(lambda _: buy(), range(callers)))

    assert len(sessions) == 1 and offer_count(seller.db.engine) == 1
    (session_id,) = sessions
    offer = seller.db.read(lambda tx: tx.stripe.checkout_offer(session_id))
    assert offer is not None and offer.credits == credits_("100")


def test_a_plan_checkout_records_no_offer(seller: AppContext) -> None:
    result = billing.create_checkout_session(
        seller,
        account_id=ACCOUNT,
        package_id="",
        plan_id="pro_monthly",
        success_url="https://app.example/ok",
        cancel_url="https://app.example/cancel",
        idempotency_key="subscribe",
    )
    assert seller.db.read(lambda tx: tx.stripe.checkout_offer(result.session.id)) is None


def test_a_refund_claws_back_the_refunded_share_of_the_unspent_credits(shop: AppContext) -> None:
    apply(shop, event(checkout("cs_5"), START))  # 500 credits for 500 cents
    spend(shop, "100")
    refund = ChargeRefunded("ch_5", "pi_cs_5", CUSTOMER, amount=500, amount_refunded=250)
    first = apply(shop, event(refund, START + timedelta(hours=1)))
    assert first.outcome is EventOutcome.APPLIED
    assert balance(shop)[0] == credits_("200")  # half refunded: half of the 400 unspent
    older = apply(shop, event(replace(refund, amount_refunded=100), START + timedelta(hours=2)))
    assert older.outcome is EventOutcome.STALE and balance(shop)[0] == credits_("200")
    spend(shop, "50")
    full = apply(shop, event(replace(refund, amount_refunded=500), START + timedelta(hours=3)))
    assert full.outcome is EventOutcome.APPLIED
    assert balance(shop)[0] == 0  # refunded in full: all that is left goes


def test_a_dispute_freezes_purchased_credits_until_it_is_won(shop: AppContext) -> None:
    apply(shop, event(checkout("cs_6"), START))
    credits.grant_credits(
        shop,
        account_id=ACCOUNT,
        amount=credits_("50"),
        source=GrantSource.PROMOTIONAL,
        priority=None,
        effective_at=None,
        expires_at=None,
        description="",
        metadata={},
        idempotency_key="promo",
    )
    opened = DisputeChanged("dp_1", "ch_6", "pi_cs_6", 500, DisputeState.OPEN)
    apply(shop, event(opened, START + timedelta(days=1)))
    assert balance(shop) == (credits_("550"), credits_("50"))
    assert queries.get_balance(shop, ACCOUNT).frozen == credits_("500")
    with pytest.raises(Exception, match="available"):
        spend(shop, "60")
    spend(shop, "50")  # the promotional credits stay spendable
    won = replace(opened, state=DisputeState.WON)
    apply(shop, event(won, START + timedelta(days=9)))
    assert balance(shop) == (credits_("500"), credits_("500"))


def test_a_lost_dispute_claws_back_the_package_and_unfreezes(shop: AppContext) -> None:
    apply(shop, event(checkout("cs_7"), START))
    spend(shop, "120")
    opened = DisputeChanged("dp_2", "ch_7", "pi_cs_7", 500, DisputeState.OPEN)
    lost = replace(opened, state=DisputeState.LOST)
    # Closed first, then the older "created": the created event is stale.
    apply(shop, event(lost, START + timedelta(days=9)))
    stale = apply(shop, event(opened, START + timedelta(days=1)))
    assert stale.outcome is EventOutcome.STALE
    view = queries.get_balance(shop, ACCOUNT)
    assert (view.balance, view.available, view.frozen) == (0, 0, 0)


def test_a_failed_payment_intent_is_recorded(shop: AppContext) -> None:
    failure = PaymentFailed("pi_9", CUSTOMER, ACCOUNT, "Your card was declined.")
    result = apply(shop, event(failure, START))
    assert result.outcome is EventOutcome.APPLIED and "declined" in result.detail
    assert balance(shop) == (0, 0)


# -- subscriptions -----------------------------------------------------------------------------


def periods(count: int, start: datetime = START) -> list[tuple[datetime, datetime]]:
    return [(add_months(start, k), add_months(start, k + 1)) for k in range(count)]


def subscribe_and_pay(ctx: AppContext, clock: ManualClock, plan: str, spent: list[str]) -> list:
    """Subscribe to plan, then pay three periods, spending spent[k] in period k."""
    remaining = []
    for k, (start, end) in enumerate(periods(3)):
        clock.set(start + timedelta(minutes=1))
        if k == 0:
            apply(ctx, event(sub_change(plan, SubscriptionStatus.ACTIVE, start, end), start))
        apply(ctx, event(invoice(plan, start, end), start + timedelta(seconds=30)))
        spend(ctx, spent[k])
        remaining.append(balance(ctx)[0])
    return remaining


def test_reset_sets_the_allowance_back_to_the_plan_each_period(
    shop: AppContext, clock: ManualClock
) -> None:
    assert subscribe_and_pay(shop, clock, "starter_monthly", ["50", "150", "0"]) == [
        credits_("150"),
        credits_("50"),
        credits_("200"),
    ]


def test_rollover_carries_the_remainder_up_to_the_cap(shop: AppContext, clock: ManualClock) -> None:
    # Pro: 400 a month, cap 400. Left 300 → 700; left 600 → carry 400 → 800.
    assert subscribe_and_pay(shop, clock, "pro_monthly", ["100", "100", "0"]) == [
        credits_("300"),
        credits_("600"),
        credits_("800"),
    ]


def test_add_keeps_everything_and_adds_the_plan(shop: AppContext, clock: ManualClock) -> None:
    assert subscribe_and_pay(shop, clock, "ultimate_monthly", ["500", "0", "1000"]) == [
        credits_("1500"),
        credits_("3500"),
        credits_("4500"),
    ]


def test_reset_credits_expire_at_period_end_without_a_renewal(
    shop: AppContext, clock: ManualClock
) -> None:
    start, end = periods(1)[0]
    apply(shop, event(invoice("starter_monthly", start, end, reason="subscription_create"), start))
    assert balance(shop)[0] == credits_("200")
    clock.set(end + timedelta(seconds=1))
    assert balance(shop)[0] == 0


def test_a_period_is_granted_once_whatever_delivers_it(
    shop: AppContext, clock: ManualClock
) -> None:
    start, end = periods(1)[0]
    paid = invoice("starter_monthly", start, end)
    apply(shop, event(paid, start))
    apply(shop, event(replace(paid, invoice_id="in_other"), start + timedelta(seconds=5)))
    assert balance(shop)[0] == credits_("200")


def test_a_yearly_plan_drops_its_allowance_monthly_for_a_year(
    shop: AppContext, clock: ManualClock
) -> None:
    year_end = add_months(START, 12)
    apply(
        shop, event(sub_change("starter_yearly", SubscriptionStatus.ACTIVE, START, year_end), START)
    )
    apply(
        shop, event(invoice("starter_yearly", START, year_end, reason="subscription_create"), START)
    )
    seen = [balance(shop)[0]]
    for month in range(1, 13):
        clock.set(add_months(START, month) + timedelta(minutes=1))
        granted = allowances.grant_due_allowances(shop)
        assert granted == (1 if month < 12 else 0)
        assert allowances.grant_due_allowances(shop) == 0  # a second replica finds nothing
        seen.append(balance(shop)[0])
        spend(shop, "10") if month < 12 else None
    # RESET: each month starts at 200 again; the 13th month (next year) is not paid yet.
    assert seen[:12] == [credits_("200")] * 12
    assert seen[12] == 0
    windows = shop.db.read(lambda tx: tx.subscriptions.latest_period("sub_1"))
    assert windows is not None and windows.period_end == year_end


def test_an_upgrade_grants_the_difference_at_once_and_a_downgrade_waits(
    shop: AppContext, clock: ManualClock
) -> None:
    (s1, e1), (s2, e2) = periods(2)
    apply(shop, event(sub_change("starter_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    apply(shop, event(invoice("starter_monthly", s1, e1, reason="subscription_create"), s1))
    clock.set(s1 + timedelta(days=3))
    up = sub_change("pro_monthly", SubscriptionStatus.ACTIVE, s1, e1)
    result = apply(shop, event(up, s1 + timedelta(days=3)))
    assert len(result.grant_ids) == 1
    assert balance(shop)[0] == credits_("400")
    ent = billing.get_entitlements(shop, ACCOUNT)
    assert ent.plan is not None and ent.plan.id == "pro_monthly"
    clock.set(s1 + timedelta(days=10))
    down = sub_change("starter_monthly", SubscriptionStatus.ACTIVE, s1, e1)
    assert apply(shop, event(down, s1 + timedelta(days=10))).grant_ids == ()
    assert balance(shop)[0] == credits_("400")
    ent = billing.get_entitlements(shop, ACCOUNT)
    assert ent.plan is not None and ent.plan.id == "pro_monthly"
    clock.set(s2 + timedelta(minutes=1))
    apply(shop, event(invoice("starter_monthly", s2, e2), s2))
    # Pro rolled 400 over (cap 400) into the Starter period? No: the new period runs on
    # Starter, whose policy (RESET) decides: the remainder expires, 200 are granted.
    assert balance(shop)[0] == credits_("200")


def test_cancellation_ends_the_allowance(shop: AppContext, clock: ManualClock) -> None:
    s1, e1 = periods(1)[0]
    apply(shop, event(sub_change("pro_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    apply(shop, event(invoice("pro_monthly", s1, e1, reason="subscription_create"), s1))
    clock.set(s1 + timedelta(days=20))
    ended = sub_change("pro_monthly", SubscriptionStatus.CANCELED, s1, e1, ended=clock.now())
    apply(shop, event(ended, clock.now()))
    assert balance(shop)[0] == 0
    ent = billing.get_entitlements(shop, ACCOUNT)
    assert ent.subscription is not None
    assert ent.subscription.status is SubscriptionStatus.CANCELED


@pytest.mark.parametrize("freeze", [False, True])
def test_a_failed_renewal_makes_the_subscription_past_due(
    shop: AppContext, clock: ManualClock, freeze: bool
) -> None:
    ctx = replace(shop, billing=BillingPolicy(freeze_allowance_when_past_due=freeze))
    (s1, e1), (s2, e2) = periods(2)
    apply(ctx, event(sub_change("ultimate_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    apply(ctx, event(invoice("ultimate_monthly", s1, e1, reason="subscription_create"), s1))
    clock.set(s2 + timedelta(hours=1))
    failed = apply(ctx, event(invoice("ultimate_monthly", s2, e2, paid=False), s2))
    assert "past due" in failed.detail
    ent = billing.get_entitlements(ctx, ACCOUNT)
    assert ent.subscription is not None
    assert ent.subscription.status is SubscriptionStatus.PAST_DUE
    assert ent.subscription.allowance_frozen is freeze
    assert balance(ctx) == (credits_("2000"), 0 if freeze else credits_("2000"))
    clock.set(s2 + timedelta(days=2))
    apply(ctx, event(invoice("ultimate_monthly", s2, e2), s2 + timedelta(days=2)))
    assert balance(ctx) == (credits_("4000"), credits_("4000"))


# -- order independence ------------------------------------------------------------------------


def _story(tag: str) -> list[StripeEvent]:
    """Two months of one customer's life in events, oldest first, for account acct_<tag>."""
    (s1, e1), (s2, e2), (s3, e3) = periods(3)
    account, customer, sub = f"acct_{tag}", f"cus_{tag}", f"sub_{tag}"
    mine = {"account_id": account, "customer_id": customer}

    def own(payload: Payload) -> Payload:
        return replace(payload, **mine)  # type: ignore[arg-type]

    pack = replace(checkout(f"cs_{tag}"), **mine)
    return [
        event(pack, s1 - timedelta(days=1)),
        event(
            CheckoutCompleted(
                f"cs_sub_{tag}",
                "subscription",
                "paid",
                customer,
                account,
                "",
                "starter_monthly",
                "",
                sub,
                2000,
                "usd",
            ),
            s1,
        ),
        event(
            own(sub_change("starter_monthly", SubscriptionStatus.INCOMPLETE, s1, e1, sub=sub)), s1
        ),
        event(own(invoice("starter_monthly", s1, e1, sub=sub, reason="subscription_create")), s1),
        event(own(sub_change("starter_monthly", SubscriptionStatus.ACTIVE, s1, e1, sub=sub)), s1),
        event(
            own(sub_change("pro_monthly", SubscriptionStatus.ACTIVE, s1, e1, sub=sub)),
            s1 + timedelta(days=4),
        ),
        event(
            ChargeRefunded(f"ch_{tag}", f"pi_cs_{tag}", customer, 500, 100),
            s1 + timedelta(days=5),
        ),
        event(own(invoice("pro_monthly", s2, e2, sub=sub)), s2),
        event(own(sub_change("pro_monthly", SubscriptionStatus.ACTIVE, s2, e2, sub=sub)), s2),
        event(own(invoice("pro_monthly", s3, e3, sub=sub, paid=False)), s3),
        event(own(sub_change("pro_monthly", SubscriptionStatus.PAST_DUE, s3, e3, sub=sub)), s3),
        event(DisputeChanged(f"dp_{tag}", f"ch_{tag}", f"pi_cs_{tag}", 500, DisputeState.OPEN), s3),
    ]


def _open_account(ctx: AppContext, account: str) -> None:
    accounts.create_account(
        ctx,
        account_id=account,
        billing_mode=BillingMode.PREPAID,
        stripe_customer_id="",
        parent_id="",
        low_balance_threshold=None,
        metadata={},
        idempotency_key=f"create-{account}",
    )


@pytest.mark.parametrize("order", ["reversed", "duplicated", "shuffled"])
def test_any_order_and_duplicates_end_in_the_same_state(
    shop: AppContext, clock: ManualClock, engine: Engine, order: str
) -> None:
    ctx = replace(shop, billing=BillingPolicy(freeze_allowance_when_past_due=True))
    story, other = _story("a"), _story("b")
    if order == "reversed":
        delivery = list(reversed(other))
    elif order == "duplicated":
        delivery = [ev for pair in zip(other, other, strict=True) for ev in pair] + other
    else:
        delivery = [other[i] for i in (7, 3, 11, 0, 9, 5, 1, 10, 2, 8, 4, 6)]
    _open_account(ctx, "acct_a")
    _open_account(ctx, "acct_b")
    # Delivered while period 1 runs: later events are as "early" for both deliveries.
    clock.set(START + timedelta(days=10))
    for ev in story:
        apply(ctx, ev)
    for ev in delivery:
        apply(ctx, ev)
    ordered, disordered = state(ctx, engine, "acct_a"), state(ctx, engine, "acct_b")
    assert ordered == disordered
    # And the story did what it says: a pack (minus the refunded fifth, frozen by the dispute),
    # Starter upgraded to Pro in period 1, Pro in period 2 (rollover), period 3 unpaid.
    assert ordered["subs"] == [
        (
            SubscriptionStatus.PAST_DUE,
            add_months(START, 2),
            add_months(START, 3),
            "pro_monthly",
            None,
            False,
        )
    ]
    assert ordered["balance"] == credits_("400") + credits_("400") + credits_("400")
    assert ordered["available"] == 0


def test_a_yearly_plan_pauses_its_drops_while_unpaid_and_resumes(
    shop: AppContext, clock: ManualClock
) -> None:
    year_end = add_months(START, 12)
    active = sub_change("ultimate_yearly", SubscriptionStatus.ACTIVE, START, year_end)
    apply(shop, event(active, START))
    apply(
        shop,
        event(invoice("ultimate_yearly", START, year_end, reason="subscription_create"), START),
    )
    clock.set(add_months(START, 1))
    assert allowances.grant_due_allowances(shop) == 1
    unpaid = replace(active, status=SubscriptionStatus.UNPAID)
    apply(shop, event(unpaid, clock.now() + timedelta(days=1)))
    clock.set(add_months(START, 2) + timedelta(days=1))
    assert allowances.grant_due_allowances(shop) == 0  # no drop while unpaid
    assert balance(shop)[0] == credits_("4000")  # ADD: two months of 2000
    clock.set(add_months(START, 3) + timedelta(days=2))
    apply(shop, event(active, clock.now()))
    assert allowances.grant_due_allowances(shop) == 1  # the month in progress
    assert allowances.grant_due_allowances(shop) == 0
    assert balance(shop)[0] == credits_("6000")


def test_a_renewal_paid_late_after_the_next_one_takes_nothing_from_it(
    shop: AppContext, clock: ManualClock
) -> None:
    (s1, e1), (s2, e2) = periods(2)
    apply(shop, event(sub_change("starter_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    clock.set(s2 + timedelta(hours=1))
    apply(shop, event(invoice("starter_monthly", s2, e2), s2))
    assert balance(shop)[0] == credits_("200")
    late = apply(shop, event(invoice("starter_monthly", s1, e1, reason="subscription_create"), s1))
    assert late.grant_ids == ()
    assert balance(shop)[0] == credits_("200")  # RESET: in order, period 1 was reset away


def test_a_paid_period_after_cancellation_grants_nothing(
    shop: AppContext, clock: ManualClock
) -> None:
    s1, e1 = periods(1)[0]
    apply(shop, event(sub_change("pro_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    clock.set(s1 + timedelta(days=20))
    ended = sub_change("pro_monthly", SubscriptionStatus.CANCELED, s1, e1, ended=clock.now())
    apply(shop, event(ended, clock.now()))
    apply(shop, event(invoice("pro_monthly", s1, e1, reason="subscription_create"), s1))
    assert balance(shop)[0] == 0  # in order: granted, then voided when it ended


def test_switching_monthly_to_yearly_pays_the_year(shop: AppContext, clock: ManualClock) -> None:
    s1, e1 = periods(1)[0]
    apply(shop, event(sub_change("ultimate_monthly", SubscriptionStatus.ACTIVE, s1, e1), s1))
    apply(shop, event(invoice("ultimate_monthly", s1, e1, reason="subscription_create"), s1))
    switch = s1 + timedelta(days=10)
    clock.set(switch)
    year_end = add_months(switch, 12)
    apply(
        shop,
        event(sub_change("ultimate_yearly", SubscriptionStatus.ACTIVE, switch, year_end), switch),
    )
    upgrade = replace(
        invoice("ultimate_yearly", switch, year_end, reason="subscription_update"), proration=False
    )
    proration = replace(upgrade, invoice_id="in_proration", proration=True)
    apply(shop, event(proration, switch))  # a proration alone pays no new period
    assert balance(shop)[0] == credits_("2000")
    apply(shop, event(upgrade, switch))
    assert balance(shop)[0] == credits_("4000")  # ADD: the year's first month on top
    for month in range(1, 12):
        clock.set(add_months(switch, month))
        assert allowances.grant_due_allowances(shop) == 1
    assert balance(shop)[0] == credits_("26000")


# What the release before package_credits stored as the fingerprint of this very event.
FINGERPRINT_BEFORE_PACKAGE_CREDITS = (
    "6deffbd0866bb32eabf3af9dcad180aba98260d6d03dad2fb600f8662eb1d821"
)


@pytest.mark.parametrize("package_credits", [None, 1_500_000_000])
def test_an_event_stored_before_package_credits_still_replays(
    ctx: AppContext, clock: ManualClock, package_credits: int | None
) -> None:
    """stripe reconcile resends events under their keys; a record stored by the release before
    package_credits existed must still match, whatever this gateway now sends."""
    event = StripeEvent(
        "evt_123",
        "checkout.session.completed",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        CheckoutCompleted(
            session_id="cs_1",
            mode="payment",
            payment_status="paid",
            customer_id="cus_1",
            account_id="acct",
            package_id="pack_500",
            plan_id="",
            payment_intent_id="pi_1",
            subscription_id="",
            amount_total=500,
            currency="usd",
            package_credits=package_credits,
        ),
    )
    earlier = EventResult(EventOutcome.APPLIED, "granted 500 credits of pack_500 to acct")
    record = IdempotencyRecord(
        "ApplyStripeEvent", FINGERPRINT_BEFORE_PACKAGE_CREDITS, codec.dumps(earlier)
    )
    ctx.db.write(lambda tx: tx.idempotency.add("stripe:evt_123", record, clock.now()))

    outcome = stripe_events.apply_stripe_event(ctx, event, idempotency_key="stripe:evt_123")

    assert outcome.replayed and outcome.result == earlier
