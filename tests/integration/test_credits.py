"""Grants, spending, holds, expiry, voids and refunds through the real server, on both
databases, with the clock under the test's control."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from creditline import CreditlineClient
from creditline.errors import FailedPrecondition, InsufficientCredits, ReservationExpired
from creditline.v1 import grant_pb2, ledger_pb2, reservation_pb2
from sqlalchemy import Engine

from billing_service.domain.clock import ManualClock
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.sweeping import sweep_due_accounts
from tests.helpers import ledger_sum

PURCHASE = grant_pb2.GRANT_SOURCE_PURCHASE


def balance(client: CreditlineClient, account: str) -> tuple[str, str, str]:
    b = client.get_balance(account).balance
    return (b.balance, b.held, b.available)


def kinds(client: CreditlineClient, account: str) -> list[tuple[str, str]]:
    entries = client.list_ledger_entries(account).ledger_entries
    return [(ledger_pb2.LedgerEntryKind.Name(e.kind), e.amount) for e in reversed(entries)]


@pytest.fixture
def acct(client: CreditlineClient) -> str:
    client.create_account("acct")
    return "acct"


def test_spend_drains_buckets_in_order(
    client: CreditlineClient, acct: str, clock: ManualClock
) -> None:
    never = client.grant_credits(acct, "10", source=PURCHASE).grant.grant_id
    later = client.grant_credits(
        acct, "10", source=PURCHASE, expire_time=clock.now() + timedelta(days=30)
    ).grant.grant_id
    sooner = client.grant_credits(
        acct, "10", source=PURCHASE, expire_time=clock.now() + timedelta(days=2)
    ).grant.grant_id
    first = client.grant_credits(acct, "10", source=PURCHASE, priority=0).grant.grant_id
    entry = client.spend_credits(acct, "35", feature="chat").ledger_entry
    assert [(m.grant_id, m.amount) for m in entry.buckets] == [
        (first, "-10"),
        (sooner, "-10"),
        (later, "-10"),
        (never, "-5"),
    ]
    assert (entry.amount, entry.balance_after, entry.feature) == ("-35", "5", "chat")
    shown = client.get_balance(acct).balance.grants
    assert [(g.grant_id, g.remaining) for g in shown] == [(never, "5")]


def test_hold_commit_below_hold_releases_rest(
    client: CreditlineClient, acct: str, engine: Engine
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    hold = client.reserve_credits(acct, "6", feature="gen").reservation
    assert hold.status == reservation_pb2.RESERVATION_STATUS_ACTIVE
    assert balance(client, acct) == ("10", "6", "4")
    done = client.commit_reservation(hold.reservation_id, "2.5")
    assert done.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert done.reservation.committed_amount == "2.5"
    assert done.ledger_entry.reservation_id == hold.reservation_id
    assert done.ledger_entry.feature == "gen"
    assert balance(client, acct) == ("7.5", "0", "7.5")
    assert ledger_sum(engine, acct) == 7_500_000


def test_commit_above_hold_needs_the_difference(client: CreditlineClient, acct: str) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    hold = client.reserve_credits(acct, "4").reservation
    other = client.reserve_credits(acct, "5").reservation
    with pytest.raises(InsufficientCredits) as caught:
        client.commit_reservation(hold.reservation_id, "6")
    assert caught.value.required == Decimal("2")
    assert caught.value.available == Decimal("1")
    assert balance(client, acct) == ("10", "9", "1")
    client.release_reservation(other.reservation_id)
    client.commit_reservation(hold.reservation_id, "6")
    assert balance(client, acct) == ("4", "0", "4")


def test_resolved_holds_cannot_resolve_again(client: CreditlineClient, acct: str) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    hold = client.reserve_credits(acct, "4").reservation
    client.release_reservation(hold.reservation_id)
    with pytest.raises(FailedPrecondition) as caught:
        client.commit_reservation(hold.reservation_id, "1")
    assert caught.value.reason == "RESERVATION_NOT_ACTIVE"
    assert balance(client, acct) == ("10", "0", "10")


def test_expired_hold_is_released_and_cannot_commit(
    client: CreditlineClient, acct: str, clock: ManualClock, ctx: AppContext
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    hold = client.reserve_credits(acct, "4", ttl=timedelta(minutes=5)).reservation
    clock.advance(timedelta(minutes=5))
    with pytest.raises(ReservationExpired):
        client.commit_reservation(hold.reservation_id, "1")
    # The commit was refused and moved nothing. Opening the account to try it applied the
    # expiry that was due anyway (as any call on the account does), so the sweeper finds
    # nothing left to do.
    assert sweep_due_accounts(ctx) == 0
    got = client.get_reservation(hold.reservation_id).reservation
    assert got.status == reservation_pb2.RESERVATION_STATUS_EXPIRED
    assert balance(client, acct) == ("10", "0", "10")
    released = client.release_reservation(hold.reservation_id).reservation
    assert released.status == reservation_pb2.RESERVATION_STATUS_EXPIRED


def test_hold_expiry_is_applied_on_touch_before_the_sweeper(
    client: CreditlineClient, acct: str, clock: ManualClock
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    client.reserve_credits(acct, "8", ttl=timedelta(seconds=30))
    clock.advance(timedelta(seconds=31))
    client.spend_credits(acct, "9")
    assert balance(client, acct) == ("1", "0", "1")


def test_default_and_maximum_ttl(client: CreditlineClient, acct: str, clock: ManualClock) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    hold = client.reserve_credits(acct, "1").reservation
    assert hold.expire_time.ToDatetime() - hold.create_time.ToDatetime() == timedelta(minutes=15)
    with pytest.raises(Exception) as caught:
        client.reserve_credits(acct, "1", ttl=timedelta(days=2))
    assert getattr(caught.value, "field", None) == "ttl"


def test_bucket_expiry_writes_an_entry(
    client: CreditlineClient, acct: str, clock: ManualClock, ctx: AppContext, engine: Engine
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE, expire_time=clock.now() + timedelta(days=1))
    client.grant_credits(acct, "3", source=PURCHASE)
    client.spend_credits(acct, "4")
    clock.advance(timedelta(days=1))
    assert sweep_due_accounts(ctx) == 1
    assert kinds(client, acct)[-1] == ("LEDGER_ENTRY_KIND_EXPIRY", "-6")
    assert balance(client, acct) == ("3", "0", "3")
    assert ledger_sum(engine, acct) == 3_000_000
    grants = client.list_grants(acct, statuses=[grant_pb2.GRANT_STATUS_EXPIRED]).grants
    assert [(g.amount, g.remaining) for g in grants] == [("10", "0")]


def test_balance_read_applies_due_expiry_first(
    client: CreditlineClient, acct: str, clock: ManualClock, engine: Engine
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE, expire_time=clock.now() + timedelta(hours=1))
    clock.advance(timedelta(hours=1))
    assert balance(client, acct) == ("0", "0", "0")
    assert ledger_sum(engine, acct) == 0


def test_future_grant_is_pending_until_effective(
    client: CreditlineClient, acct: str, clock: ManualClock, ctx: AppContext
) -> None:
    response = client.grant_credits(
        acct, "5", source=PURCHASE, effective_time=clock.now() + timedelta(days=1)
    )
    assert response.grant.status == grant_pb2.GRANT_STATUS_PENDING
    assert not response.HasField("ledger_entry")
    with pytest.raises(InsufficientCredits):
        client.spend_credits(acct, "1")
    clock.advance(timedelta(days=1))
    assert sweep_due_accounts(ctx) == 1
    assert balance(client, acct) == ("5", "0", "5")
    assert kinds(client, acct) == [("LEDGER_ENTRY_KIND_GRANT", "5")]


def test_void_grant(client: CreditlineClient, acct: str) -> None:
    kept = client.grant_credits(acct, "5", source=PURCHASE).grant.grant_id
    promo = client.grant_credits(
        acct, "10", source=grant_pb2.GRANT_SOURCE_PROMOTIONAL, priority=0
    ).grant.grant_id
    client.spend_credits(acct, "4")
    voided = client.void_grant(promo, reason="abuse")
    assert voided.grant.status == grant_pb2.GRANT_STATUS_VOIDED
    assert (voided.ledger_entry.amount, voided.ledger_entry.metadata["reason"]) == ("-6", "abuse")
    assert balance(client, acct) == ("5", "0", "5")
    assert client.get_balance(acct).balance.grants[0].grant_id == kept
    with pytest.raises(FailedPrecondition) as caught:
        client.void_grant(promo)
    assert caught.value.reason == "GRANT_NOT_ACTIVE"


def test_refund_whole_and_part(client: CreditlineClient, acct: str, engine: Engine) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    spend = client.spend_credits(acct, "6").ledger_entry
    part = client.refund_spend(spend.entry_id, amount="2", reason="bad output").ledger_entry
    assert (part.kind, part.amount, part.refunded_entry_id) == (
        ledger_pb2.LEDGER_ENTRY_KIND_REFUND,
        "2",
        spend.entry_id,
    )
    rest = client.refund_spend(spend.entry_id).ledger_entry
    assert rest.amount == "4"
    with pytest.raises(FailedPrecondition) as caught:
        client.refund_spend(spend.entry_id, amount="0.000001")
    assert caught.value.reason == "REFUND_EXCEEDS_SPEND"
    assert balance(client, acct) == ("10", "0", "10")
    assert ledger_sum(engine, acct) == 10_000_000


def test_refund_after_expiry_goes_to_a_new_bucket(
    client: CreditlineClient, acct: str, clock: ManualClock
) -> None:
    client.grant_credits(acct, "5", source=PURCHASE, expire_time=clock.now() + timedelta(hours=1))
    spend = client.spend_credits(acct, "3").ledger_entry
    clock.advance(timedelta(hours=2))
    refund = client.refund_spend(spend.entry_id).ledger_entry
    grants = client.get_balance(acct).balance.grants
    assert [(g.grant_id, g.source, g.remaining, g.HasField("expire_time")) for g in grants] == [
        (refund.buckets[0].grant_id, grant_pb2.GRANT_SOURCE_REFUND, "3", False)
    ]


def test_refund_refuses_what_is_not_a_spend(client: CreditlineClient, acct: str) -> None:
    grant = client.grant_credits(acct, "5", source=PURCHASE).ledger_entry
    with pytest.raises(FailedPrecondition) as caught:
        client.refund_spend(grant.entry_id)
    assert caught.value.reason == "NOT_A_SPEND"


def test_ledger_pages_and_filters(client: CreditlineClient, acct: str, clock: ManualClock) -> None:
    client.grant_credits(acct, "100", source=PURCHASE)
    start = clock.advance(timedelta(minutes=1))
    for i in range(7):
        client.spend_credits(acct, "1", feature="chat" if i % 2 else "image")
        clock.advance(timedelta(seconds=1))
    pages, token = [], ""
    while True:
        page = client.list_ledger_entries(
            acct, page_size=2, page_token=token, kinds=[ledger_pb2.LEDGER_ENTRY_KIND_SPEND]
        )
        pages.append([e.balance_after for e in page.ledger_entries])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["93", "94"], ["95", "96"], ["97", "98"], ["99"]]
    chat = client.list_ledger_entries(acct, feature="chat").ledger_entries
    assert [e.balance_after for e in chat] == ["94", "96", "98"]
    window = client.list_ledger_entries(
        acct, start_time=start, end_time=start + timedelta(seconds=2)
    ).ledger_entries
    assert [e.balance_after for e in window] == ["98", "99"]
    with pytest.raises(Exception) as caught:
        client.list_ledger_entries(acct, page_size=2, page_token=page.next_page_token or "x")
    assert getattr(caught.value, "field", None) == "page_token"


def test_page_token_is_bound_to_its_filters(client: CreditlineClient, acct: str) -> None:
    client.grant_credits(acct, "100", source=PURCHASE)
    for _ in range(3):
        client.spend_credits(acct, "1", feature="chat")
    token = client.list_ledger_entries(acct, page_size=1).next_page_token
    with pytest.raises(Exception) as caught:
        client.list_ledger_entries(acct, page_size=1, page_token=token, feature="chat")
    assert getattr(caught.value, "field", None) == "page_token"


def test_list_reservations_filters_by_status(
    client: CreditlineClient, acct: str, clock: ManualClock
) -> None:
    client.grant_credits(acct, "10", source=PURCHASE)
    kept = client.reserve_credits(acct, "1").reservation.reservation_id
    clock.advance(timedelta(seconds=1))
    gone = client.reserve_credits(acct, "1").reservation.reservation_id
    client.release_reservation(gone)
    active = client.list_reservations(
        acct, statuses=[reservation_pb2.RESERVATION_STATUS_ACTIVE]
    ).reservations
    assert [r.reservation_id for r in active] == [kept]
    every = client.list_reservations(acct).reservations
    assert [r.reservation_id for r in every] == [gone, kept]
