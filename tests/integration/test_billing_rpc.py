"""BillingService's selling RPCs through the real server and the Python client, on both
databases: the catalog, Checkout and portal sessions (with a recording Stripe port), entitlements,
the subscription list, ApplyStripeEvent's replay flag, and every refusal with its reason.

The Stripe adapter itself is tested against the fake Stripe server in tests/unit; here Stripe is
a recording stand-in for the port, so these tests are about what the server asks Stripe for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from creditline import CreditlineClient, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from creditline.v1 import catalog_pb2, stripe_event_pb2, subscription_pb2
from google.protobuf import timestamp_pb2

from billing_service.catalog.commands import seed_default_catalog
from billing_service.domain.clock import ManualClock
from billing_service.rpc.server import build_server
from billing_service.service_layer.context import AppContext
from tests.fakes.stripe_port import RecordingStripe

START = datetime(2026, 3, 1, tzinfo=UTC)
OK_URL, CANCEL_URL = "https://app.example/paid", "https://app.example/cancel"


@pytest.fixture
def stripe_port() -> RecordingStripe:
    return RecordingStripe()


@pytest.fixture
def shop_client(
    ctx: AppContext, clock: ManualClock, stripe_port: RecordingStripe
) -> Iterator[CreditlineClient]:
    """A server whose context has the default catalog (packages priced in Stripe except
    pack_2000) and the recording Stripe port."""
    clock.set(START)
    seed_default_catalog(ctx.db, clock)

    def price(tx) -> None:  # type: ignore[no-untyped-def]
        for item in tx.catalog.all():
            if item.id != "pack_2000":
                tx.catalog.set_stripe_ids(
                    item.id, product_id=f"prod_{item.id}", price_id=f"price_{item.id}", now=START
                )

    ctx.db.write(price)
    running = build_server(replace(ctx, stripe=stripe_port), listen="127.0.0.1:0", tokens={})
    with CreditlineClient(f"127.0.0.1:{running.port}", backoff=0) as client:
        client.create_account("buyer")
        yield client
    running.stop(0)


def test_the_catalog_lists_packages_and_plans(shop_client: CreditlineClient) -> None:
    packages = shop_client.list_credit_packages().packages
    assert [(p.package_id, p.credits, p.unit_amount) for p in packages] == [
        ("pack_100", "100", 100),
        ("pack_500", "500", 500),
        ("pack_2000", "2000", 2000),
    ]
    plans = {p.plan_id: p for p in shop_client.list_plans().plans}
    assert len(plans) == 8
    monthly, yearly = plans["pro_monthly"], plans["pro_yearly"]
    assert monthly.interval == catalog_pb2.BILLING_INTERVAL_MONTH
    assert yearly.interval == catalog_pb2.BILLING_INTERVAL_YEAR
    assert yearly.unit_amount == 10 * monthly.unit_amount
    assert yearly.monthly_credits == monthly.monthly_credits == "400"
    assert monthly.renewal_policy == catalog_pb2.RENEWAL_POLICY_ROLLOVER
    assert monthly.rollover_cap == "400" and monthly.stripe_price_id == "price_pro_monthly"


def test_a_package_checkout_is_a_payment_for_a_new_customer_reused_after(
    shop_client: CreditlineClient, stripe_port: RecordingStripe
) -> None:
    first = shop_client.create_checkout_session(
        "buyer", package_id="pack_500", success_url=OK_URL, cancel_url=CANCEL_URL
    )
    second = shop_client.create_checkout_session(
        "buyer", plan_id="pro_yearly", success_url=OK_URL, cancel_url=CANCEL_URL
    )
    assert first.stripe_customer_id == second.stripe_customer_id == "cus_1"
    assert first.url == "https://checkout.example/payment"
    kinds = [what for what, _ in stripe_port.calls]
    assert kinds == ["customer", "checkout", "checkout"]
    _, pack = stripe_port.calls[1]
    assert pack["mode"] == "payment" and pack["price"] == "price_pack_500"
    # The credits on sale ride with the session: its completion grants them (see the webhooks).
    assert pack["metadata"] == {"account_id": "buyer", "package_id": "pack_500", "credits": "500"}
    _, plan = stripe_port.calls[2]
    assert plan["mode"] == "subscription"
    assert plan["metadata"] == {"account_id": "buyer", "plan_id": "pro_yearly"}
    account = shop_client.get_account("buyer").account
    assert account.stripe_customer_id == "cus_1"


def test_a_retried_checkout_sends_stripe_the_same_key(
    shop_client: CreditlineClient, stripe_port: RecordingStripe
) -> None:
    for _ in range(2):
        shop_client.create_checkout_session(
            "buyer",
            package_id="pack_100",
            success_url=OK_URL,
            cancel_url=CANCEL_URL,
            idempotency_key="buy-100",
        )
    keys = {details["key"] for what, details in stripe_port.calls if what == "checkout"}
    assert keys == {"creditline-checkout:buyer:buy-100"}


@pytest.mark.parametrize(
    ("kwargs", "error", "reason"),
    [
        ({"package_id": "pack_nope"}, NotFound, "CATALOG_ITEM_NOT_FOUND"),
        ({"plan_id": "pack_500"}, NotFound, "CATALOG_ITEM_NOT_FOUND"),
        ({"package_id": "pack_2000"}, FailedPrecondition, "CATALOG_NOT_PUSHED"),
        ({"package_id": "pack_100", "success_url": "ftp://x"}, InvalidArgument, "INVALID_FIELD"),
        ({"package_id": "pack_100", "account": "nobody"}, NotFound, "ACCOUNT_NOT_FOUND"),
    ],
)
def test_checkout_refusals_name_the_problem_and_call_no_stripe(
    shop_client: CreditlineClient,
    stripe_port: RecordingStripe,
    kwargs: dict[str, str],
    error: type[Exception],
    reason: str,
) -> None:
    kwargs = dict(kwargs)  # shared by both database runs of the case
    account = kwargs.pop("account", "buyer")
    urls = {"success_url": kwargs.pop("success_url", OK_URL), "cancel_url": CANCEL_URL}
    with pytest.raises(error) as refused:
        shop_client.create_checkout_session(account, **kwargs, **urls)
    assert refused.value.reason == reason  # type: ignore[attr-defined]
    assert stripe_port.calls == []


def test_stripe_being_down_is_unavailable(
    shop_client: CreditlineClient, stripe_port: RecordingStripe
) -> None:
    stripe_port.down = True
    with pytest.raises(Unavailable) as down:
        shop_client.create_checkout_session(
            "buyer", package_id="pack_100", success_url=OK_URL, cancel_url=CANCEL_URL
        )
    assert down.value.reason == "STRIPE_UNAVAILABLE"


def test_the_portal_needs_a_customer(
    shop_client: CreditlineClient, stripe_port: RecordingStripe
) -> None:
    with pytest.raises(FailedPrecondition) as none:
        shop_client.create_portal_session("buyer", return_url=OK_URL)
    assert none.value.reason == "NO_STRIPE_CUSTOMER"
    shop_client.create_checkout_session(
        "buyer", package_id="pack_100", success_url=OK_URL, cancel_url=CANCEL_URL
    )
    portal = shop_client.create_portal_session("buyer", return_url=OK_URL)
    assert portal.url == "https://portal.example/cus_1"


def test_without_stripe_the_stripe_rpcs_say_what_to_configure(
    ctx: AppContext, clock: ManualClock
) -> None:
    seed_default_catalog(ctx.db, clock)
    running = build_server(ctx, listen="127.0.0.1:0", tokens={})
    try:
        with CreditlineClient(f"127.0.0.1:{running.port}", backoff=0) as client:
            client.create_account("buyer")
            with pytest.raises(FailedPrecondition) as checkout:
                client.create_checkout_session(
                    "buyer", package_id="pack_100", success_url=OK_URL, cancel_url=CANCEL_URL
                )
            with pytest.raises(FailedPrecondition) as portal:
                client.create_portal_session("buyer", return_url=OK_URL)
            assert len(client.list_plans().plans) == 8  # the catalog still reads
    finally:
        running.stop(0)
    for refused in (checkout.value, portal.value):
        assert refused.reason == "STRIPE_NOT_CONFIGURED"
        assert "STRIPE_SECRET_KEY" in refused.message


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _invoice_event(event_id: str, start: datetime) -> stripe_event_pb2.StripeEvent:
    return stripe_event_pb2.StripeEvent(
        event_id=event_id,
        type="invoice.paid",
        create_time=_ts(start),
        invoice=stripe_event_pb2.InvoicePayload(
            invoice_id=f"in_{event_id}",
            customer_id="cus_9",
            subscription_id="sub_9",
            account_id="buyer",
            price_id="price_creator_monthly",
            period_start_time=_ts(start),
            period_end_time=_ts(start + timedelta(days=31)),
            billing_reason="subscription_create",
            paid=True,
            amount_paid=9900,
        ),
    )


def test_apply_stripe_event_replays_and_entitlements_show_the_plan(
    shop_client: CreditlineClient,
) -> None:
    event = _invoice_event("evt_rpc_1", START)
    first = shop_client.apply_stripe_event(event)
    assert first.outcome == stripe_event_pb2.STRIPE_EVENT_OUTCOME_APPLIED
    assert not first.replayed and len(first.grant_ids) == 1
    again = shop_client.apply_stripe_event(event)
    assert again.replayed and list(again.grant_ids) == list(first.grant_ids)

    entitlements = shop_client.get_entitlements("buyer").entitlements
    assert entitlements.plan.plan_id == "creator_monthly"
    assert entitlements.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    assert entitlements.allowance_granted == "1000"
    assert entitlements.allowance_remaining == "1000"
    assert entitlements.balance.available == "1000"
    assert entitlements.allowance_period_start_time.ToDatetime(UTC) == START

    listed = list(shop_client.iter_subscriptions(page_size=1))
    assert [s.subscription_id for s in listed] == ["sub_9"]
    assert shop_client.list_subscriptions(account_id="somebody").subscriptions == []


def test_an_account_without_a_subscription_has_empty_entitlements(
    shop_client: CreditlineClient,
) -> None:
    entitlements = shop_client.get_entitlements("buyer").entitlements
    assert not entitlements.HasField("subscription") and not entitlements.HasField("plan")
    assert entitlements.allowance_remaining == "0"
    with pytest.raises(NotFound):
        shop_client.get_entitlements("nobody")


@pytest.mark.parametrize(
    ("event", "field_name"),
    [
        (stripe_event_pb2.StripeEvent(), "event.event_id"),
        (stripe_event_pb2.StripeEvent(event_id="evt_1"), "event.create_time"),
        (
            stripe_event_pb2.StripeEvent(event_id="evt_1", create_time=_ts(START)),
            "event.payload",
        ),
        (
            stripe_event_pb2.StripeEvent(
                event_id="evt_1",
                create_time=_ts(START),
                dispute=stripe_event_pb2.DisputePayload(dispute_id="du_1"),
            ),
            "event.dispute.state",
        ),
        (
            stripe_event_pb2.StripeEvent(
                event_id="evt_1",
                create_time=_ts(START),
                subscription=stripe_event_pb2.SubscriptionPayload(
                    subscription_id="sub_" + "x" * 300,
                    status=subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE,
                ),
            ),
            "event.subscription.subscription_id",
        ),
        (
            stripe_event_pb2.StripeEvent(
                event_id="evt_1",
                create_time=_ts(START),
                invoice=stripe_event_pb2.InvoicePayload(
                    invoice_id="in_1",
                    subscription_id="sub_1",
                    account_id="buyer",
                    period_start_time=_ts(START),
                    period_end_time=_ts(START - timedelta(days=1)),
                    paid=True,
                    billing_reason="subscription_cycle",
                ),
            ),
            "event.invoice.period_end_time",
        ),
        (
            stripe_event_pb2.StripeEvent(
                event_id="evt_1",
                create_time=_ts(START),
                checkout_session=stripe_event_pb2.CheckoutSessionPayload(
                    session_id="cs_1", mode="setup", account_id="buyer"
                ),
            ),
            "event.checkout_session.mode",
        ),
        (
            stripe_event_pb2.StripeEvent(
                event_id="not-an-event",
                create_time=_ts(START),
                charge=stripe_event_pb2.ChargePayload(charge_id="ch_1"),
            ),
            "event.event_id",
        ),
    ],
)
def test_a_malformed_event_is_invalid_and_changes_nothing(
    shop_client: CreditlineClient, event: stripe_event_pb2.StripeEvent, field_name: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        shop_client.apply_stripe_event(event, idempotency_key="stripe:bad")
    assert refused.value.field == field_name
    assert shop_client.get_balance("buyer").balance.balance == "0"
    assert shop_client.list_subscriptions().subscriptions == []
