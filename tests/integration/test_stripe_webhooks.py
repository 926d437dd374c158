"""A subscription's life as Stripe tells it: events shaped like Stripe's real objects for the
pinned API version (tests/fakes/stripe_events, checked against Stripe's OpenAPI description),
signed, posted to the webhook gateway app, translated and applied by the real server through
the Python client, on both databases, with the server's clock following the story.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from creditline import CreditlineClient
from creditline.v1 import subscription_pb2
from pydantic import SecretStr

from billing_service.catalog.commands import seed_default_catalog
from billing_service.domain.clock import ManualClock
from billing_service.domain.subscriptions import add_months
from billing_service.rpc.server import RunningServer
from billing_service.service_layer.allowances import grant_due_allowances
from billing_service.service_layer.context import AppContext
from tests.fakes import stripe_events as shapes
from tests.fakes import stripe_spec
from webhook_gateway.app import create_app
from webhook_gateway.settings import GatewaySettings

pytestmark = pytest.mark.asyncio

SECRET = "whsec_lifecycle"
START = datetime(2026, 5, 10, tzinfo=UTC)
ACCOUNT, CUSTOMER, SUB = "acct_w", "cus_w", "sub_w"
PLAN_PRICES = {"starter_monthly": 2000, "pro_monthly": 3900, "pro_yearly": 39000}


def at(moment: datetime) -> int:
    return int(moment.timestamp())


@pytest.fixture
def creditline(
    ctx: AppContext, clock: ManualClock, server: RunningServer
) -> Iterator[CreditlineClient]:
    """The in-process server with the default catalog (price ids price_<item>) and the
    account, and a client to it."""
    clock.set(START)
    seed_default_catalog(ctx.db, clock)

    def price(tx) -> None:  # type: ignore[no-untyped-def]
        for item in tx.catalog.all():
            tx.catalog.set_stripe_ids(
                item.id, product_id=f"prod_{item.id}", price_id=f"price_{item.id}", now=START
            )

    ctx.db.write(price)
    with CreditlineClient(f"127.0.0.1:{server.port}", backoff=0) as client:
        client.create_account(ACCOUNT)
        yield client


@pytest_asyncio.fixture
async def gateway(aiohttp_client: Any, creditline: CreditlineClient) -> TestClient:
    settings = GatewaySettings(STRIPE_WEBHOOK_SECRET=SecretStr(SECRET))
    client: TestClient = await aiohttp_client(create_app(settings, creditline))
    return client


async def deliver(gateway: TestClient, event: dict[str, Any]) -> str:
    """Post a signed event; it must be accepted. Returns the gateway's status word."""
    assert stripe_spec.validate_event(event) == []
    body = json.dumps(event).encode()
    headers = {"Stripe-Signature": shapes.sign(body, SECRET, int(time.time()))}
    answer = await gateway.post("/stripe/webhook", data=body, headers=headers)
    assert answer.status == 200, await answer.text()
    status: str = (await answer.json())["status"]
    return status


def subscription_event(
    kind: str, plan: str, status: str, start: datetime, *, created: datetime, **extra: Any
) -> dict[str, Any]:
    interval = "year" if plan.endswith("yearly") else "month"
    end = add_months(start, 12 if interval == "year" else 1)
    obj = shapes.subscription(
        subscription_id=SUB,
        customer=CUSTOMER,
        price_id=f"price_{plan}",
        lookup_key=f"creditline_{plan}",
        interval=interval,
        status=status,
        current_period_start=at(start),
        current_period_end=at(end),
        metadata={"account_id": ACCOUNT, "plan_id": plan},
        unit_amount=PLAN_PRICES[plan],
        **extra,
    )
    return shapes.event(f"customer.subscription.{kind}", obj, created=at(created))


def invoice_event(
    plan: str, start: datetime, *, paid: bool = True, reason: str = "subscription_cycle"
) -> dict[str, Any]:
    end = add_months(start, 12 if plan.endswith("yearly") else 1)
    obj = shapes.invoice(
        customer=CUSTOMER,
        subscription_id=SUB,
        subscription_metadata={"account_id": ACCOUNT, "plan_id": plan},
        price_id=f"price_{plan}",
        period_start=at(start),
        period_end=at(end),
        billing_reason=reason,
        status="paid" if paid else "open",
        amount_paid=PLAN_PRICES[plan] if paid else 0,
        amount_due=PLAN_PRICES[plan],
    )
    kind = "invoice.paid" if paid else "invoice.payment_failed"
    return shapes.event(kind, obj, created=at(start))


def balance(client: CreditlineClient) -> Decimal:
    return Decimal(client.get_balance(ACCOUNT).balance.balance)


async def test_a_subscription_from_checkout_to_cancellation(
    gateway: TestClient, creditline: CreditlineClient, clock: ManualClock
) -> None:
    p1, p2, p3 = START, add_months(START, 1), add_months(START, 2)
    session = shapes.checkout_session(
        mode="subscription",
        customer=CUSTOMER,
        metadata={"account_id": ACCOUNT, "plan_id": "starter_monthly"},
        amount_total=2000,
        subscription=SUB,
    )
    assert await deliver(gateway, shapes.event("checkout.session.completed", session)) == "applied"
    await deliver(
        gateway, subscription_event("created", "starter_monthly", "incomplete", p1, created=p1)
    )
    await deliver(gateway, invoice_event("starter_monthly", p1, reason="subscription_create"))
    await deliver(
        gateway, subscription_event("updated", "starter_monthly", "active", p1, created=p1)
    )
    assert balance(creditline) == 200

    clock.set(p1 + timedelta(days=3))
    creditline.spend_credits(ACCOUNT, 50)
    upgrade = subscription_event(
        "updated", "pro_monthly", "active", p1, created=p1 + timedelta(days=3)
    )
    assert await deliver(gateway, upgrade) == "applied"
    assert balance(creditline) == 350  # 150 left + the 200 the upgrade adds at once
    entitlements = creditline.get_entitlements(ACCOUNT).entitlements
    assert entitlements.plan.plan_id == "pro_monthly"
    assert entitlements.allowance_granted == "400"

    clock.set(p2 + timedelta(minutes=1))
    await deliver(gateway, invoice_event("pro_monthly", p2))
    await deliver(gateway, subscription_event("updated", "pro_monthly", "active", p2, created=p2))
    assert balance(creditline) == 750  # Pro rolls over up to 400: 350 carried + 400

    clock.set(p3 + timedelta(minutes=1))
    await deliver(gateway, invoice_event("pro_monthly", p3, paid=False))
    await deliver(gateway, subscription_event("updated", "pro_monthly", "past_due", p3, created=p3))
    entitlements = creditline.get_entitlements(ACCOUNT).entitlements
    assert entitlements.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE
    assert balance(creditline) == 750  # not frozen: CREDITLINE_FREEZE_ALLOWANCE... is off

    clock.set(p3 + timedelta(days=5))
    ended = subscription_event(
        "deleted",
        "pro_monthly",
        "canceled",
        p3,
        created=clock.now(),
        canceled_at=at(clock.now()),
        ended_at=at(clock.now()),
    )
    assert await deliver(gateway, ended) == "applied"
    assert balance(creditline) == 0
    entitlements = creditline.get_entitlements(ACCOUNT).entitlements
    assert entitlements.subscription.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert entitlements.subscription.end_time.ToDatetime(UTC) == clock.now().replace(microsecond=0)


async def test_a_pack_refunded_and_disputed(
    gateway: TestClient, creditline: CreditlineClient
) -> None:
    session = shapes.checkout_session(
        customer=CUSTOMER,
        metadata={"account_id": ACCOUNT, "package_id": "pack_2000"},
        amount_total=2000,
        payment_intent="pi_pack",
    )
    await deliver(gateway, shapes.event("checkout.session.completed", session))
    assert balance(creditline) == 2000
    charge = shapes.charge(
        customer=CUSTOMER, payment_intent="pi_pack", amount=2000, amount_refunded=500
    )
    assert await deliver(gateway, shapes.event("charge.refunded", charge)) == "applied"
    assert balance(creditline) == 1500  # a quarter refunded: a quarter of the credits back
    dispute = shapes.dispute(charge=charge["id"], payment_intent="pi_pack", amount=1500)
    await deliver(gateway, shapes.event("charge.dispute.created", dispute))
    view = creditline.get_balance(ACCOUNT).balance
    assert (view.balance, view.available, view.frozen) == ("1500", "0", "1500")
    lost = {**dispute, "status": "lost"}
    await deliver(gateway, shapes.event("charge.dispute.closed", lost))
    view = creditline.get_balance(ACCOUNT).balance
    assert (view.balance, view.available, view.frozen) == ("0", "0", "0")


async def test_a_pack_session_creditline_did_not_create_grants_the_catalogs_credits(
    gateway: TestClient, creditline: CreditlineClient
) -> None:
    # A session made with a Stripe key rather than CreateCheckoutSession, naming its own
    # credits in the metadata: no offer was recorded for it, so the package's credits.
    session = shapes.checkout_session(
        customer=CUSTOMER,
        metadata={"account_id": ACCOUNT, "package_id": "pack_2000", "credits": "1000000000"},
        amount_total=2000,
        payment_intent="pi_forged",
    )
    assert await deliver(gateway, shapes.event("checkout.session.completed", session)) == "applied"
    assert balance(creditline) == 2000
    charge = shapes.charge(
        customer=CUSTOMER, payment_intent="pi_forged", amount=2000, amount_refunded=1000
    )
    assert await deliver(gateway, shapes.event("charge.refunded", charge)) == "applied"
    assert balance(creditline) == 1000  # half refunded: half of what was granted


@pytest.mark.parametrize("credits", ["-5", "12.3456789", "lots"])
async def test_a_pack_whose_credits_metadata_is_unreadable_grants_the_catalogs(
    gateway: TestClient, creditline: CreditlineClient, credits: str
) -> None:
    # Not a value this service writes (a session made elsewhere): the buyer paid, so the
    # purchase is granted at the catalog's credits rather than refused.
    session = shapes.checkout_session(
        customer=CUSTOMER,
        metadata={"account_id": ACCOUNT, "package_id": "pack_2000", "credits": credits},
        amount_total=2000,
        payment_intent="pi_odd_metadata",
    )
    assert await deliver(gateway, shapes.event("checkout.session.completed", session)) == "applied"
    assert balance(creditline) == 2000


async def test_a_failed_payment_intent_is_acknowledged(
    gateway: TestClient, creditline: CreditlineClient
) -> None:
    intent = shapes.payment_intent(
        customer=CUSTOMER,
        amount=500,
        metadata={"account_id": ACCOUNT},
        last_payment_error_message="Your card was declined.",
    )
    assert (
        await deliver(gateway, shapes.event("payment_intent.payment_failed", intent)) == "applied"
    )
    assert balance(creditline) == 0


async def test_a_yearly_plan_drops_monthly_through_the_sweeper(
    gateway: TestClient, creditline: CreditlineClient, ctx: AppContext, clock: ManualClock
) -> None:
    await deliver(
        gateway, subscription_event("created", "pro_yearly", "active", START, created=START)
    )
    await deliver(gateway, invoice_event("pro_yearly", START, reason="subscription_create"))
    assert balance(creditline) == 400
    for month in range(1, 12):
        clock.set(add_months(START, month))
        assert grant_due_allowances(ctx) == 1
    # Pro rolls over up to 400: from month two on the balance holds 400 carried + 400 new.
    assert balance(creditline) == 800
    clock.set(add_months(START, 12))
    assert grant_due_allowances(ctx) == 0  # the next year is not paid yet
    entitlements = creditline.get_entitlements(ACCOUNT).entitlements
    assert entitlements.allowance_period_start_time.ToDatetime(UTC) == add_months(START, 11)
