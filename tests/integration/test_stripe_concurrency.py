"""Stripe events applied at the same time, as several replicas (or Stripe's parallel deliveries)
would: on PostgreSQL the transactions really interleave; every outcome must equal one ordered
delivery (DESIGN §4.4)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import Engine

from billing_service.domain.clock import ManualClock
from billing_service.domain.stripe_events import ChargeRefunded, DisputeChanged, DisputeState
from billing_service.domain.subscriptions import SubscriptionStatus, add_months
from billing_service.service_layer import allowances, queries
from billing_service.service_layer.context import AppContext
from tests.helpers import ledger_sum
from tests.integration.test_stripe_events import (
    ACCOUNT,
    CUSTOMER,
    START,
    apply,
    checkout,
    credits_,
    event,
    invoice,
    shop,
    sub_change,
)

__all__ = ["shop"]  # the fixture, used below

T = TypeVar("T")
THREADS = 8


def all_at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls on their own threads, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_refunds_of_one_charge_at_once_claw_back_as_one_ordered_delivery(
    shop: AppContext, engine: Engine
) -> None:
    apply(shop, event(checkout("cs_c"), START))  # 500 credits for 500 cents
    refunds = [
        event(ChargeRefunded("ch_c", "pi_cs_c", CUSTOMER, 500, 50 * (k + 1)), START)
        for k in range(THREADS)
    ]
    all_at_once([lambda ev=ev: apply(shop, ev) for ev in refunds])
    # 400 of 500 cents refunded, in whatever order: 400/500 of the unspent 500 credits.
    view = queries.get_balance(shop, ACCOUNT)
    assert view.balance == credits_("100") == ledger_sum(engine, ACCOUNT)


def test_a_refund_and_a_lost_dispute_at_once_take_the_package_once(
    shop: AppContext, engine: Engine
) -> None:
    apply(shop, event(checkout("cs_d"), START))
    refund = event(ChargeRefunded("ch_d", "pi_cs_d", CUSTOMER, 500, 250), START)
    lost = event(DisputeChanged("du_d", "ch_d", "pi_cs_d", 500, DisputeState.LOST), START)
    all_at_once([lambda: apply(shop, refund), lambda: apply(shop, lost)])
    view = queries.get_balance(shop, ACCOUNT)
    assert (view.balance, view.frozen) == (0, 0)
    purchase = shop.db.read(lambda tx: tx.stripe.purchase("cs_d"))
    assert purchase is not None and purchase.clawed_back == credits_("500")
    assert ledger_sum(engine, ACCOUNT) == 0


def test_many_replicas_running_the_yearly_drops_grant_each_month_once(
    shop: AppContext, clock: ManualClock, engine: Engine
) -> None:
    year_end = add_months(START, 12)
    apply(
        shop,
        event(sub_change("ultimate_yearly", SubscriptionStatus.ACTIVE, START, year_end), START),
    )
    apply(
        shop,
        event(invoice("ultimate_yearly", START, year_end, reason="subscription_create"), START),
    )
    clock.set(add_months(START, 1) + timedelta(minutes=1))
    granted = all_at_once([lambda: allowances.grant_due_allowances(shop)] * THREADS)
    assert sum(granted) == 1
    assert queries.get_balance(shop, ACCOUNT).balance == credits_("4000")
    assert ledger_sum(engine, ACCOUNT) == credits_("4000")


def test_the_same_event_delivered_at_once_applies_once(shop: AppContext, engine: Engine) -> None:
    paid = event(checkout("cs_e"), START)
    results = all_at_once([lambda: apply(shop, paid)] * THREADS)
    assert {r.outcome for r in results} == {results[0].outcome}
    assert queries.get_balance(shop, ACCOUNT).balance == credits_("500")
    assert ledger_sum(engine, ACCOUNT) == credits_("500")
