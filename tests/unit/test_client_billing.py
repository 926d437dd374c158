"""CreditlineClient's BillingService methods, usage helpers, estimate-sized holds and PricedRun.

One in-process gRPC server answers both services from one recording fake (test_client's
FakeCreditService, routed for BillingService too), so a test sees every call in order, whichever
service it went to. Statuses carry packed ErrorInfo details as the server sends them; backoff is
zero, so no test waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from creditline import (
    CreditlineClient,
    FailedPrecondition,
    NotFound,
    OverrunRejected,
    PricedRun,
)
from creditline.usage import as_usage, line, usage, with_tier
from creditline.v1 import (
    billing_service_pb2,
    billing_service_pb2_grpc,
    catalog_pb2,
    credit_service_pb2,
    credit_service_pb2_grpc,
    pricing_pb2,
    reservation_pb2,
    stripe_event_pb2,
    subscription_pb2,
)
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from tests.unit.test_client import FakeCreditService, route_every_rpc, status

_BILLING = billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"]

WHEN = datetime(2030, 1, 1, tzinfo=UTC)


class FakeCreditline(FakeCreditService, billing_service_pb2_grpc.BillingServiceServicer):
    """The recording fake, answering every CreditService and BillingService RPC."""


route_every_rpc(FakeCreditline, _BILLING)


@pytest.fixture
def fake() -> FakeCreditline:
    return FakeCreditline()


@pytest.fixture
def target(fake: FakeCreditline) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    credit_service_pb2_grpc.add_CreditServiceServicer_to_server(fake, server)
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None).wait()


@pytest.fixture
def client(target: str) -> Iterator[CreditlineClient]:
    with CreditlineClient(target, token="s3cret", backoff=0, timeout=5) as client:
        yield client


def gpt4o(**counts: Any) -> pricing_pb2.UsageLine:
    """A gpt-4o usage line with the given counts."""
    return line("openai", "gpt-4o", **counts)


# Each BillingService method: the request it sends and the response it returns.

GPT4O_PRICE = pricing_pb2.ModelPrice(
    provider="openai", model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10"
)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


BILLING_CALLS: list[tuple[str, Callable[[CreditlineClient], Message], Message, Message]] = [
    (
        "EstimateCost",
        lambda c: c.estimate_cost(
            gpt4o(input_tokens=1200, max_output_tokens=800), account_id="acct"
        ),
        billing_service_pb2.EstimateCostRequest(
            usage=pricing_pb2.Usage(
                lines=[
                    pricing_pb2.UsageLine(
                        provider="openai", model="gpt-4o", input_tokens=1200, max_output_tokens=800
                    )
                ]
            ),
            account_id="acct",
        ),
        billing_service_pb2.EstimateCostResponse(
            estimate=pricing_pb2.CostEstimate(total_credits="11", maximum_credits="19"),
            covered=True,
            available="100",
        ),
    ),
    (
        "ListPriceBooks",
        lambda c: c.list_price_books(page_size=2, page_token="p2"),
        billing_service_pb2.ListPriceBooksRequest(page_size=2, page_token="p2"),
        billing_service_pb2.ListPriceBooksResponse(
            price_books=[pricing_pb2.PriceBook(version=3)], next_page_token="p3"
        ),
    ),
    (
        "ListModelPrices",
        lambda c: c.list_model_prices(version=3, provider="openai", page_size=10, page_token="t"),
        billing_service_pb2.ListModelPricesRequest(
            version=3, provider="openai", page_size=10, page_token="t"
        ),
        billing_service_pb2.ListModelPricesResponse(
            prices=[GPT4O_PRICE], price_book=pricing_pb2.PriceBook(version=3)
        ),
    ),
    (
        "GetModelPrice",
        lambda c: c.get_model_price("openai", "gpt-4o", version=2),
        billing_service_pb2.GetModelPriceRequest(provider="openai", model="gpt-4o", version=2),
        billing_service_pb2.GetModelPriceResponse(
            price=GPT4O_PRICE, price_book=pricing_pb2.PriceBook(version=2)
        ),
    ),
    (
        "UpsertModelPrices",
        lambda c: c.upsert_model_prices(
            [GPT4O_PRICE],
            effective_time=WHEN,
            credit_usd=Decimal("0.0010"),
            markup="0.20",
            note="spring prices",
            idempotency_key="prices-2030",
        ),
        billing_service_pb2.UpsertModelPricesRequest(
            prices=[GPT4O_PRICE],
            effective_time=_timestamp(WHEN),
            credit_usd="0.001",
            markup="0.2",
            note="spring prices",
            idempotency_key="prices-2030",
        ),
        billing_service_pb2.UpsertModelPricesResponse(
            price_book=pricing_pb2.PriceBook(version=4, model_count=66)
        ),
    ),
    (
        "ListTiers",
        lambda c: c.list_tiers(version=4),
        billing_service_pb2.ListTiersRequest(version=4),
        billing_service_pb2.ListTiersResponse(tiers=[pricing_pb2.Tier(name="TIER_1A")]),
    ),
    (
        "UpsertTier",
        lambda c: c.upsert_tier(
            "TIER_1A",
            Decimal("5.00"),
            fee_unit="scenario",
            description="one scenario",
            effective_time=WHEN,
            idempotency_key="tier-1a",
        ),
        billing_service_pb2.UpsertTierRequest(
            tier=pricing_pb2.Tier(
                name="TIER_1A", base_fee="5", fee_unit="scenario", description="one scenario"
            ),
            effective_time=_timestamp(WHEN),
            idempotency_key="tier-1a",
        ),
        billing_service_pb2.UpsertTierResponse(
            tier=pricing_pb2.Tier(name="TIER_1A", base_fee="5"),
            price_book=pricing_pb2.PriceBook(version=5),
        ),
    ),
    (
        "SetAccountPriceOverride",
        lambda c: c.set_account_price_override(
            "acct",
            "openai",
            "*",
            discount_percent="12.50",
            effective_time=WHEN,
            expire_time=WHEN + timedelta(days=90),
            idempotency_key="acct-discount",
        ),
        billing_service_pb2.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id="acct",
                provider="openai",
                model="*",
                discount_percent="12.5",
                effective_time=_timestamp(WHEN),
                expire_time=_timestamp(WHEN + timedelta(days=90)),
            ),
            idempotency_key="acct-discount",
        ),
        billing_service_pb2.SetAccountPriceOverrideResponse(
            override=pricing_pb2.AccountPriceOverride(override_id="ovr_1", account_id="acct")
        ),
    ),
    (
        "ListAccountPriceOverrides",
        lambda c: c.list_account_price_overrides("acct"),
        billing_service_pb2.ListAccountPriceOverridesRequest(account_id="acct"),
        billing_service_pb2.ListAccountPriceOverridesResponse(
            overrides=[pricing_pb2.AccountPriceOverride(override_id="ovr_1")]
        ),
    ),
    (
        "ListPlans",
        lambda c: c.list_plans(include_inactive=True),
        billing_service_pb2.ListPlansRequest(include_inactive=True),
        billing_service_pb2.ListPlansResponse(plans=[catalog_pb2.Plan(plan_id="pro_monthly")]),
    ),
    (
        "ListCreditPackages",
        lambda c: c.list_credit_packages(),
        billing_service_pb2.ListCreditPackagesRequest(),
        billing_service_pb2.ListCreditPackagesResponse(
            packages=[catalog_pb2.CreditPackage(package_id="pack_500", credits="500")]
        ),
    ),
    (
        "CreateCheckoutSession",
        lambda c: c.create_checkout_session(
            "acct",
            package_id="pack_500",
            success_url="https://app.example/ok",
            cancel_url="https://app.example/no",
            idempotency_key="buy-1",
        ),
        billing_service_pb2.CreateCheckoutSessionRequest(
            account_id="acct",
            package_id="pack_500",
            success_url="https://app.example/ok",
            cancel_url="https://app.example/no",
            idempotency_key="buy-1",
        ),
        billing_service_pb2.CreateCheckoutSessionResponse(session_id="cs_1", url="https://x"),
    ),
    (
        "CreatePortalSession",
        lambda c: c.create_portal_session("acct", return_url="https://app.example/account"),
        billing_service_pb2.CreatePortalSessionRequest(
            account_id="acct", return_url="https://app.example/account"
        ),
        billing_service_pb2.CreatePortalSessionResponse(url="https://portal"),
    ),
    (
        "GetEntitlements",
        lambda c: c.get_entitlements("acct"),
        billing_service_pb2.GetEntitlementsRequest(account_id="acct"),
        billing_service_pb2.GetEntitlementsResponse(
            entitlements=subscription_pb2.Entitlements(account_id="acct")
        ),
    ),
    (
        "ListSubscriptions",
        lambda c: c.list_subscriptions(account_id="acct", page_size=10),
        billing_service_pb2.ListSubscriptionsRequest(account_id="acct", page_size=10),
        billing_service_pb2.ListSubscriptionsResponse(
            subscriptions=[subscription_pb2.Subscription(subscription_id="sub_1")]
        ),
    ),
    (
        "ApplyStripeEvent",
        lambda c: c.apply_stripe_event(stripe_event_pb2.StripeEvent(event_id="evt_1")),
        billing_service_pb2.ApplyStripeEventRequest(
            event=stripe_event_pb2.StripeEvent(event_id="evt_1"), idempotency_key="stripe:evt_1"
        ),
        billing_service_pb2.ApplyStripeEventResponse(
            outcome=stripe_event_pb2.STRIPE_EVENT_OUTCOME_APPLIED
        ),
    ),
]


def test_checkout_needs_exactly_one_item(client: CreditlineClient, fake: FakeCreditline) -> None:
    for items in ({}, {"package_id": "pack_500", "plan_id": "pro_monthly"}):
        with pytest.raises(ValueError, match="exactly one"):
            client.create_checkout_session(
                "acct", success_url="https://a.example", cancel_url="https://b.example", **items
            )
    assert fake.received == []


def test_every_billing_rpc_has_a_case() -> None:
    assert {name for name, *_ in BILLING_CALLS} == {method.name for method in _BILLING.methods}


@pytest.mark.parametrize(
    ("rpc", "call", "expected", "response"), BILLING_CALLS, ids=[c[0] for c in BILLING_CALLS]
)
def test_billing_methods_send_their_request_and_return_the_response(
    client: CreditlineClient,
    fake: FakeCreditline,
    rpc: str,
    call: Callable[[CreditlineClient], Message],
    expected: Message,
    response: Message,
) -> None:
    fake.answer(rpc, response)

    returned = call(client)

    assert returned == response
    [seen] = fake.received
    assert (seen.method, seen.request) == (rpc, expected)
    assert seen.metadata.get("authorization") == "Bearer s3cret"


def test_a_fixed_price_override_sends_the_price(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    client.set_account_price_override("acct", "openai", "gpt-4o", fixed_price=GPT4O_PRICE)

    [request] = fake.requests("SetAccountPriceOverride")
    assert request.override.fixed_price == GPT4O_PRICE
    assert request.override.discount_percent == ""
    assert not request.override.HasField("effective_time")
    assert request.idempotency_key


MUTATING_BILLING_CALLS: list[tuple[str, Callable[[CreditlineClient], Message]]] = [
    ("UpsertModelPrices", lambda c: c.upsert_model_prices([GPT4O_PRICE])),
    ("UpsertTier", lambda c: c.upsert_tier("TIER_1A", 5)),
    (
        "SetAccountPriceOverride",
        lambda c: c.set_account_price_override("acct", "openai", "gpt-4o", discount_percent=10),
    ),
]


@pytest.mark.parametrize(
    ("rpc", "call"), MUTATING_BILLING_CALLS, ids=[rpc for rpc, _ in MUTATING_BILLING_CALLS]
)
def test_mutating_billing_calls_reuse_their_generated_key_on_retry(
    client: CreditlineClient,
    fake: FakeCreditline,
    rpc: str,
    call: Callable[[CreditlineClient], Message],
) -> None:
    fake.fail(
        rpc,
        status(grpc.StatusCode.UNAVAILABLE, reason="DATABASE_UNAVAILABLE"),
        status(grpc.StatusCode.DEADLINE_EXCEEDED),
    )

    call(client)
    call(client)

    keys = [request.idempotency_key for request in fake.requests(rpc)]
    assert len(keys) == 4
    assert keys[0]
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
    assert [seen.metadata.get("authorization") for seen in fake.received] == ["Bearer s3cret"] * 4


def test_billing_reads_are_retried(client: CreditlineClient, fake: FakeCreditline) -> None:
    fake.fail("ListTiers", status(grpc.StatusCode.UNAVAILABLE))
    fake.answer("ListTiers", billing_service_pb2.ListTiersResponse(tiers=[pricing_pb2.Tier()]))

    assert len(client.list_tiers().tiers) == 1
    assert len(fake.requests("ListTiers")) == 2


@pytest.mark.parametrize("reason", ["MODEL_NOT_FOUND", "TIER_NOT_FOUND", "PRICE_BOOK_NOT_FOUND"])
def test_pricing_not_found_reasons_raise_not_found_once(
    client: CreditlineClient, fake: FakeCreditline, reason: str
) -> None:
    fake.fail("EstimateCost", status(grpc.StatusCode.NOT_FOUND, "no such thing", reason=reason))

    with pytest.raises(NotFound) as raised:
        client.estimate_cost(gpt4o(input_tokens=1))

    assert type(raised.value) is NotFound
    assert raised.value.reason == reason
    assert len(fake.requests("EstimateCost")) == 1


def test_iter_model_prices_and_price_books_follow_page_tokens(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    def prices(request: billing_service_pb2.ListModelPricesRequest) -> Message:
        models, token = {"": (["gpt-4o", "gpt-4o-mini"], "p2"), "p2": (["o3"], "")}[
            request.page_token
        ]
        return billing_service_pb2.ListModelPricesResponse(
            prices=[pricing_pb2.ModelPrice(provider="openai", model=m) for m in models],
            next_page_token=token,
        )

    def books(request: billing_service_pb2.ListPriceBooksRequest) -> Message:
        versions, token = {"": ([3], "b2"), "b2": ([2, 1], "")}[request.page_token]
        return billing_service_pb2.ListPriceBooksResponse(
            price_books=[pricing_pb2.PriceBook(version=v) for v in versions],
            next_page_token=token,
        )

    fake.answer("ListModelPrices", prices)
    fake.answer("ListPriceBooks", books)

    models = [p.model for p in client.iter_model_prices(version=3, provider="openai", page_size=2)]
    versions = [b.version for b in client.iter_price_books(page_size=2)]

    assert models == ["gpt-4o", "gpt-4o-mini", "o3"]
    assert versions == [3, 2, 1]
    first, second = fake.requests("ListModelPrices")
    assert (first.page_token, second.page_token) == ("", "p2")
    assert (second.version, second.provider, second.page_size) == (3, "openai", 2)
    assert [r.page_token for r in fake.requests("ListPriceBooks")] == ["", "b2"]


# Usage helpers.


def test_line_sets_every_count() -> None:
    built = line(
        "anthropic",
        "claude-sonnet-4",
        input_tokens=1,
        cached_input_tokens=2,
        cache_write_tokens=3,
        output_tokens=4,
        reasoning_tokens=5,
        requests=6,
        units=7,
        max_output_tokens=8,
    )

    assert built == pricing_pb2.UsageLine(
        provider="anthropic",
        model="claude-sonnet-4",
        input_tokens=1,
        cached_input_tokens=2,
        cache_write_tokens=3,
        output_tokens=4,
        reasoning_tokens=5,
        requests=6,
        units=7,
        max_output_tokens=8,
    )


def test_max_output_tokens_is_unset_unless_given() -> None:
    assert not gpt4o(input_tokens=1).HasField("max_output_tokens")
    assert gpt4o(max_output_tokens=0).HasField("max_output_tokens")


def test_usage_takes_lines_alone_or_in_lists() -> None:
    a, b, c = gpt4o(input_tokens=1), gpt4o(input_tokens=2), gpt4o(input_tokens=3)

    built = usage(a, [b, c], tier="TIER_1A", tier_quantity=2)

    assert list(built.lines) == [a, b, c]
    assert (built.tier, built.tier_quantity) == ("TIER_1A", 2)
    assert usage([a, b]) == usage(a, b) == pricing_pb2.Usage(lines=[a, b])
    assert usage(tier="TIER_1A") == pricing_pb2.Usage(tier="TIER_1A")


def test_as_usage_accepts_a_usage_a_line_or_a_sequence_of_lines() -> None:
    a, b = gpt4o(input_tokens=1), gpt4o(output_tokens=2)
    given = usage(a, tier="TIER_1A")

    copied = as_usage(given)

    assert copied == given
    assert copied is not given
    assert as_usage(a) == pricing_pb2.Usage(lines=[a])
    assert as_usage([a, b]) == as_usage((a, b)) == pricing_pb2.Usage(lines=[a, b])


def test_with_tier_adds_a_tier_once() -> None:
    a = gpt4o(input_tokens=1)

    assert with_tier(a, "TIER_1A", 3) == pricing_pb2.Usage(
        lines=[a], tier="TIER_1A", tier_quantity=3
    )
    with pytest.raises(ValueError, match="already"):
        with_tier(usage(a, tier="TIER_1B"), "TIER_1A")
    with pytest.raises(ValueError, match="empty"):
        with_tier(a, "")


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: gpt4o(input_tokens=1.5), TypeError, "input_tokens must be an int"),
        (lambda: gpt4o(output_tokens=True), TypeError, "output_tokens must be an int"),
        (lambda: gpt4o(max_output_tokens=800.0), TypeError, "max_output_tokens"),
        (lambda: gpt4o(reasoning_tokens=-1), ValueError, "reasoning_tokens must not be negative"),
        (lambda: gpt4o(max_output_tokens=-1), ValueError, "max_output_tokens"),
        (lambda: line("", "gpt-4o"), ValueError, "provider"),
        (lambda: line("openai", ""), ValueError, "model"),
        (lambda: usage(tier="TIER_1A", tier_quantity=-2), ValueError, "tier_quantity"),
        (lambda: usage(tier="TIER_1A", tier_quantity=1.0), TypeError, "tier_quantity"),
        (lambda: usage("gpt-4o"), TypeError, "usage takes UsageLines"),
        (lambda: usage([pricing_pb2.Usage()]), TypeError, "not Usage"),
        (lambda: as_usage("gpt-4o", "estimate"), TypeError, "estimate must be"),
        (lambda: as_usage([gpt4o(), "x"]), TypeError, "not str"),
    ],
)
def test_usage_helpers_refuse_bad_input(
    build: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.estimate_cost(12),
        lambda c: c.estimate_cost("openai/gpt-4o"),
        lambda c: c.reserve_credits("acct", estimate={"model": "gpt-4o"}),
        lambda c: c.commit_reservation("rsv_1", actual_usage=[pricing_pb2.Usage()]),
    ],
)
def test_what_is_no_usage_is_refused_before_sending(
    client: CreditlineClient, fake: FakeCreditline, call: Callable[[CreditlineClient], object]
) -> None:
    with pytest.raises(TypeError):
        call(client)
    assert fake.received == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.upsert_tier("TIER_1A", 5.0),
        lambda c: c.upsert_model_prices([], markup=0.2),
        lambda c: c.upsert_model_prices([], credit_usd=0.001),
        lambda c: c.set_account_price_override("acct", "openai", "*", discount_percent=12.5),
    ],
)
def test_float_prices_and_discounts_are_refused_before_sending(
    client: CreditlineClient, fake: FakeCreditline, call: Callable[[CreditlineClient], object]
) -> None:
    with pytest.raises(TypeError, match="float"):
        call(client)
    assert fake.received == []


def test_naive_effective_time_is_refused_before_sending(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        client.upsert_tier("TIER_1A", 5, effective_time=datetime(2030, 1, 1))  # noqa: DTZ001
    assert fake.received == []


# Estimate-sized holds and usage-priced commits.


def test_reserve_with_an_estimate_sends_no_amount(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    planned = gpt4o(input_tokens=1200, max_output_tokens=800)

    client.reserve_credits(
        "acct", estimate=planned, overrun_policy=pricing_pb2.OVERRUN_POLICY_REJECT
    )
    client.reserve_credits("acct", "3")

    with_estimate, with_amount = fake.requests("ReserveCredits")
    assert with_estimate.amount == ""
    assert with_estimate.estimate == pricing_pb2.Usage(lines=[planned])
    assert with_estimate.overrun_policy == pricing_pb2.OVERRUN_POLICY_REJECT
    assert with_amount.amount == "3"
    assert not with_amount.HasField("estimate")
    assert with_amount.overrun_policy == pricing_pb2.OVERRUN_POLICY_UNSPECIFIED


def test_commit_with_actual_usage_sends_no_amount(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    actual = [gpt4o(input_tokens=1200, output_tokens=512), line("openai", "o3", requests=1)]
    answer = credit_service_pb2.CommitReservationResponse(
        actual_cost=pricing_pb2.CostEstimate(total_credits="9.1"), charged="9.1"
    )
    fake.answer("CommitReservation", answer)

    response = client.commit_reservation("rsv_1", actual_usage=actual)

    assert response == answer
    [request] = fake.requests("CommitReservation")
    assert request.amount == ""
    assert request.actual_usage == pricing_pb2.Usage(lines=actual)
    assert request.idempotency_key


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.reserve_credits("acct"),
        lambda c: c.reserve_credits("acct", "5", estimate=gpt4o(input_tokens=1)),
        lambda c: c.commit_reservation("rsv_1"),
        lambda c: c.commit_reservation("rsv_1", "1", actual_usage=gpt4o(input_tokens=1)),
        lambda c: c.hold("acct"),
        lambda c: c.hold("acct", "5", estimate=gpt4o(input_tokens=1)),
        lambda c: c.set_account_price_override("acct", "openai", "gpt-4o"),
        lambda c: c.set_account_price_override(
            "acct", "openai", "gpt-4o", fixed_price=GPT4O_PRICE, discount_percent=5
        ),
        lambda c: c.priced_run("acct", usage(gpt4o(), tier="TIER_1B"), tier="TIER_1A"),
        lambda c: c.priced_run("acct", gpt4o(), tier_quantity=2),
    ],
)
def test_exactly_one_of_is_checked_before_sending(
    client: CreditlineClient, fake: FakeCreditline, call: Callable[[CreditlineClient], object]
) -> None:
    with pytest.raises(ValueError):
        call(client)
    assert fake.received == []


@pytest.fixture
def holds(fake: FakeCreditline) -> FakeCreditline:
    """The fake answering the hold RPCs the way the server does for an estimate-sized hold."""
    estimate = pricing_pb2.CostEstimate(
        total_credits="11", maximum_credits="19", price_book_version=3
    )
    fake.answer(
        "ReserveCredits",
        lambda request: credit_service_pb2.ReserveCreditsResponse(
            reservation=reservation_pb2.Reservation(
                reservation_id="rsv_1",
                account_id=request.account_id,
                amount="19",
                status=reservation_pb2.RESERVATION_STATUS_ACTIVE,
                overrun_policy=request.overrun_policy,
                estimate=estimate,
            )
        ),
    )
    fake.answer(
        "CommitReservation",
        lambda request: credit_service_pb2.CommitReservationResponse(
            reservation=reservation_pb2.Reservation(
                reservation_id=request.reservation_id,
                status=reservation_pb2.RESERVATION_STATUS_COMMITTED,
                committed_amount="9.5",
            ),
            actual_cost=pricing_pb2.CostEstimate(total_credits="9.5", price_book_version=3),
            comparisons=[
                pricing_pb2.UsageComparison(
                    token_class=pricing_pb2.TOKEN_CLASS_OUTPUT,
                    estimated_quantity=800,
                    actual_quantity=512,
                )
            ],
            charged="9.5",
        ),
    )
    fake.answer(
        "ReleaseReservation",
        lambda request: credit_service_pb2.ReleaseReservationResponse(
            reservation=reservation_pb2.Reservation(
                reservation_id=request.reservation_id,
                status=reservation_pb2.RESERVATION_STATUS_RELEASED,
            )
        ),
    )
    return fake


def test_hold_with_an_estimate_commits_with_usage(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    planned = gpt4o(input_tokens=1200, max_output_tokens=800)
    actual = gpt4o(input_tokens=1200, output_tokens=512)

    with client.hold(
        "acct",
        estimate=planned,
        overrun_policy=pricing_pb2.OVERRUN_POLICY_CAP,
        idempotency_key="job-1",
    ) as hold:
        assert hold.reservation.amount == "19"
        response = hold.commit(usage=actual)

    assert response.charged == "9.5"
    assert [seen.method for seen in holds.received] == ["ReserveCredits", "CommitReservation"]
    [reserve] = holds.requests("ReserveCredits")
    [commit] = holds.requests("CommitReservation")
    assert (reserve.amount, reserve.estimate) == ("", pricing_pb2.Usage(lines=[planned]))
    assert reserve.overrun_policy == pricing_pb2.OVERRUN_POLICY_CAP
    assert (commit.amount, commit.actual_usage) == ("", pricing_pb2.Usage(lines=[actual]))
    assert commit.idempotency_key == "job-1:commit"


def test_hold_commit_needs_exactly_one_of_amount_and_usage(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    with client.hold("acct", estimate=gpt4o(input_tokens=1)) as hold:
        with pytest.raises(ValueError, match="exactly one"):
            hold.commit()
        with pytest.raises(ValueError, match="exactly one"):
            hold.commit("1", usage=gpt4o(input_tokens=1))

    assert [seen.method for seen in holds.received] == ["ReserveCredits", "ReleaseReservation"]


def test_priced_run_holds_the_estimate_and_commits_the_actual_usage(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    planned = usage(gpt4o(input_tokens=1200, max_output_tokens=800))
    actual = gpt4o(input_tokens=1200, output_tokens=512)

    with client.priced_run(
        "acct", planned, tier="TIER_1A", tier_quantity=2, feature="eval", idempotency_key="run-1"
    ) as run:
        assert isinstance(run, PricedRun)
        assert (run.estimate.maximum_credits, run.reservation.amount) == ("19", "19")
        response = run.commit(actual)

    assert run.commit_response is response
    assert run.commit_response.actual_cost.total_credits == "9.5"
    assert [c.actual_quantity for c in run.commit_response.comparisons] == [512]
    assert run.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert run.idempotency_key == "run-1"
    [reserve] = holds.requests("ReserveCredits")
    [commit] = holds.requests("CommitReservation")
    assert (reserve.amount, reserve.feature, reserve.idempotency_key) == ("", "eval", "run-1")
    assert reserve.estimate == pricing_pb2.Usage(
        lines=planned.lines, tier="TIER_1A", tier_quantity=2
    )
    assert commit.actual_usage == pricing_pb2.Usage(lines=[actual], tier="TIER_1A", tier_quantity=2)
    assert commit.idempotency_key == "run-1:commit"
    assert holds.requests("ReleaseReservation") == []


def test_priced_run_sends_an_actual_usage_with_its_own_tier_as_given(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    actual = usage(gpt4o(input_tokens=1), tier="TIER_1A", tier_quantity=3)

    with client.priced_run("acct", usage(gpt4o(input_tokens=1), tier="TIER_1A")) as run:
        run.commit(actual)

    [reserve] = holds.requests("ReserveCredits")
    [commit] = holds.requests("CommitReservation")
    assert (reserve.estimate.tier, reserve.estimate.tier_quantity) == ("TIER_1A", 0)
    assert commit.actual_usage == actual


def test_priced_run_is_released_when_the_block_raises(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    run = client.priced_run("acct", gpt4o(input_tokens=1), idempotency_key="run-2")

    with pytest.raises(ZeroDivisionError), run:
        1 / 0  # noqa: B018 - the failure under test

    assert [seen.method for seen in holds.received] == ["ReserveCredits", "ReleaseReservation"]
    [release] = holds.requests("ReleaseReservation")
    assert (release.reservation_id, release.idempotency_key) == ("rsv_1", "run-2:release")
    assert run.reservation.status == reservation_pb2.RESERVATION_STATUS_RELEASED
    with pytest.raises(RuntimeError, match="not committed"):
        _ = run.commit_response


def test_an_overrun_rejected_commit_keeps_the_hold_for_the_exit_to_release(
    client: CreditlineClient, holds: FakeCreditline
) -> None:
    holds.fail(
        "CommitReservation",
        status(
            grpc.StatusCode.FAILED_PRECONDITION,
            "actual cost 20.000001 is above the hold of 19",
            reason="OVERRUN_REJECTED",
            metadata={"held": "19", "actual": "20.000001"},
        ),
    )

    with (
        pytest.raises(OverrunRejected) as raised,
        client.priced_run(
            "acct", gpt4o(max_output_tokens=800), overrun_policy=pricing_pb2.OVERRUN_POLICY_REJECT
        ) as run,
    ):
        run.commit(gpt4o(output_tokens=1000))

    error = raised.value
    assert isinstance(error, FailedPrecondition)
    assert (error.held, error.actual) == (Decimal("19"), Decimal("20.000001"))
    assert [seen.method for seen in holds.received] == [
        "ReserveCredits",
        "CommitReservation",
        "ReleaseReservation",
    ]


def test_overrun_rejected_without_amounts_gives_none(
    client: CreditlineClient, fake: FakeCreditline
) -> None:
    fake.fail(
        "CommitReservation",
        status(
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="OVERRUN_REJECTED",
            metadata={"held": "much"},
        ),
    )

    with pytest.raises(OverrunRejected) as raised:
        client.commit_reservation("rsv_1", "25")

    assert (raised.value.held, raised.value.actual) == (None, None)
    assert len(fake.requests("CommitReservation")) == 1
