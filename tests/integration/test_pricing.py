"""Pricing through the real in-process gRPC server on both databases: estimates from the shipped
default price book, the price book admin RPCs, account overrides, and estimate-sized holds whose
commits are priced at the pinned version under their overrun policy.

Everything goes through raw generated stubs. Figures use the default book's gpt-4o ($2.50/M
input, $1.25/M cached input, $10/M output) at $0.001 a credit, so 1000 input tokens are 2.5
credits and 1000 output tokens are 10 credits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from creditline.v1 import account_pb2, grant_pb2, ledger_pb2, pricing_pb2, reservation_pb2
from creditline.v1 import billing_service_pb2 as bpb
from creditline.v1 import credit_service_pb2 as cpb
from creditline.v1.billing_service_pb2_grpc import BillingServiceStub
from creditline.v1.credit_service_pb2_grpc import CreditServiceStub
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, text

from billing_service.domain.clock import ManualClock
from billing_service.domain.pricing import QUANTITY_FIELD, Usage, UsageLine, estimate
from billing_service.pricing import price_book_file
from billing_service.rpc.server import RunningServer
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.pricing import seed_price_book

PRICE_TABLES = ("tiers", "model_prices", "price_books")
COUNTED = ("price_books", "model_prices", "tiers", "price_overrides", "reservations")
DEFAULT = price_book_file.read(price_book_file.DEFAULT_PATH)
ALLOW = pricing_pb2.OVERRUN_POLICY_ALLOW_FROM_BALANCE
REJECT = pricing_pb2.OVERRUN_POLICY_REJECT
CAP = pricing_pb2.OVERRUN_POLICY_CAP
ACTIVE = reservation_pb2.RESERVATION_STATUS_ACTIVE
TC = pricing_pb2.TokenClass
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _clear_price_books(engine: Engine) -> None:
    # tests/helpers.TABLES predates the price book, so PostgreSQL keeps these between tests.
    with engine.begin() as conn:
        for table in PRICE_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def empty_book(engine: Engine) -> Iterator[None]:
    """No price book version at all, before and after the test."""
    _clear_price_books(engine)
    yield
    _clear_price_books(engine)


@pytest.fixture
def default_book(ctx: AppContext, empty_book: None) -> None:
    """The shipped default book as version 1, in force since the epoch."""
    assert seed_price_book(ctx, DEFAULT)


@pytest.fixture
def billing(server: RunningServer, default_book: None) -> Iterator[BillingServiceStub]:
    """A raw BillingService stub on the in-process server, with the default book seeded."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield BillingServiceStub(channel)
    channel.close()


@pytest.fixture
def acct(stub: CreditServiceStub) -> str:
    """An account with 100 credits."""
    return make_account(stub, "acct", "100")


def make_account(stub: CreditServiceStub, account_id: str, credits: str) -> str:
    stub.CreateAccount(
        cpb.CreateAccountRequest(
            account=account_pb2.Account(
                account_id=account_id, billing_mode=account_pb2.BILLING_MODE_PREPAID
            ),
            idempotency_key=f"create-{account_id}",
        )
    )
    stub.GrantCredits(
        cpb.GrantCreditsRequest(
            account_id=account_id,
            amount=credits,
            source=grant_pb2.GRANT_SOURCE_PURCHASE,
            idempotency_key=f"grant-{account_id}",
        )
    )
    return account_id


# --- helpers ------------------------------------------------------------------------------------


def gpt4o(**counts: int) -> pricing_pb2.UsageLine:
    return pricing_pb2.UsageLine(provider="openai", model="gpt-4o", **counts)


def usage(*lines: pricing_pb2.UsageLine, **rest: Any) -> pricing_pb2.Usage:
    return pricing_pb2.Usage(lines=lines, **rest)


def estimate_of(
    billing: BillingServiceStub, *lines: pricing_pb2.UsageLine, account_id: str = "", **rest: Any
) -> bpb.EstimateCostResponse:
    return billing.EstimateCost(
        bpb.EstimateCostRequest(usage=usage(*lines, **rest), account_id=account_id)
    )


def error_of(call: Any) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "every error carries a google.rpc.Status"
    info, fields = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return error.code(), info, fields


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()) for t in COUNTED
        }


def balance(stub: CreditServiceStub, account_id: str) -> tuple[str, str, str]:
    b = stub.GetBalance(cpb.GetBalanceRequest(account_id=account_id)).balance
    return (b.balance, b.held, b.available)


def reserve(
    stub: CreditServiceStub,
    account_id: str,
    *lines: pricing_pb2.UsageLine,
    policy: pricing_pb2.OverrunPolicy.ValueType = pricing_pb2.OVERRUN_POLICY_UNSPECIFIED,
    key: str = "hold",
    **rest: Any,
) -> reservation_pb2.Reservation:
    return stub.ReserveCredits(
        cpb.ReserveCreditsRequest(
            account_id=account_id,
            estimate=usage(*lines),
            overrun_policy=policy,
            idempotency_key=key,
            feature="chat",
            **rest,
        )
    ).reservation


def commit(
    stub: CreditServiceStub, hold_id: str, *lines: pricing_pb2.UsageLine, key: str = "commit"
) -> cpb.CommitReservationResponse:
    return stub.CommitReservation(
        cpb.CommitReservationRequest(
            reservation_id=hold_id, actual_usage=usage(*lines), idempotency_key=key
        )
    )


def upsert(billing: BillingServiceStub, key: str, **prices: str) -> bpb.UpsertModelPricesResponse:
    return billing.UpsertModelPrices(
        bpb.UpsertModelPricesRequest(
            prices=[pricing_pb2.ModelPrice(provider="openai", model="gpt-4o", **prices)],
            note="repricing",
            idempotency_key=key,
        )
    )


def discount(
    billing: BillingServiceStub, account_id: str, percent: str, key: str, model: str = "gpt-4o"
) -> pricing_pb2.AccountPriceOverride:
    return billing.SetAccountPriceOverride(
        bpb.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id=account_id, provider="openai", model=model, discount_percent=percent
            ),
            idempotency_key=key,
        )
    ).override


def lines_of(item: pricing_pb2.CostItem) -> list[tuple[str, int, str, str]]:
    return [
        (TC.Name(cl.token_class), cl.quantity, cl.unit_price_usd, cl.credits) for cl in item.lines
    ]


def spend_entries(stub: CreditServiceStub, account_id: str) -> list[ledger_pb2.LedgerEntry]:
    entries = stub.ListLedgerEntries(
        cpb.ListLedgerEntriesRequest(
            account_id=account_id, kinds=[ledger_pb2.LEDGER_ENTRY_KIND_SPEND]
        )
    ).ledger_entries
    return list(entries)


# --- estimates with the default book ------------------------------------------------------------

PRICE_OF_FIELD = {
    "input_tokens": "input_per_mtok",
    "cached_input_tokens": "cached_input_per_mtok",
    "cache_write_tokens": "cache_write_per_mtok",
    "output_tokens": "output_per_mtok",
    "requests": "per_request",
    "units": "per_unit",
}
QUANTITY = {"requests": 3, "units": 250}


def full_line(price: pricing_pb2.ModelPrice) -> pricing_pb2.UsageLine:
    """A line with a quantity of every class the model has a price for."""
    fields = {
        name: QUANTITY.get(name, 12_345)
        for name, price_field in PRICE_OF_FIELD.items()
        if getattr(price, price_field)
    }
    if price.reasoning_per_mtok or price.output_per_mtok:
        fields["reasoning_tokens"] = 777
    return pricing_pb2.UsageLine(provider=price.provider, model=price.model, **fields)


def test_every_default_model_can_be_estimated(billing: BillingServiceStub) -> None:
    prices: list[pricing_pb2.ModelPrice] = []
    token = ""
    while True:
        page = billing.ListModelPrices(bpb.ListModelPricesRequest(page_size=20, page_token=token))
        prices += page.prices
        assert page.price_book.version == 1
        token = page.next_page_token
        if not token:
            break
    assert [(p.provider, p.model) for p in prices] == [
        (m.provider, m.model) for m in DEFAULT.models
    ]
    lines = [full_line(p) for p in prices]
    answer = estimate_of(billing, *lines).estimate
    assert answer.price_book_version == 1
    assert (answer.credit_usd, answer.markup) == ("0.001", "0")
    assert len(answer.items) == len(DEFAULT.models)
    # the server's figures are the domain's figures for the same usage, line by line
    local = estimate(
        DEFAULT,
        Usage(
            tuple(
                UsageLine(
                    line.provider,
                    line.model,
                    **{name: getattr(line, name) for name in QUANTITY_FIELD.values()},
                )
                for line in lines
            )
        ),
        (),
        DEFAULT.created_at,
    )
    for item, line, expected in zip(answer.items, lines, local.items, strict=True):
        assert (item.provider, item.model) == (line.provider, line.model)
        assert Decimal(item.credits) > 0, f"{item.provider}/{item.model} priced at zero"
        classes = {TC.Name(cl.token_class).removeprefix("TOKEN_CLASS_") for cl in item.lines}
        assert classes == {cl.token_class.value for cl in expected.lines}
        assert [int(Decimal(cl.credits) * 1_000_000) for cl in item.lines] == [
            cl.credits for cl in expected.lines
        ]
        assert sum(Decimal(cl.credits) for cl in item.lines) == Decimal(item.credits)
    total = Decimal(answer.total_credits)
    assert total == sum(Decimal(i.credits) for i in answer.items) > 0
    assert Decimal(answer.total_usd) == total * Decimal("0.001")
    assert answer.minimum_credits == answer.maximum_credits == answer.total_credits


def test_estimate_is_itemized_with_tier_and_usd(billing: BillingServiceStub) -> None:
    answer = estimate_of(
        billing,
        gpt4o(input_tokens=1000, output_tokens=500),
        pricing_pb2.UsageLine(
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            cached_input_tokens=10_000,
            cache_write_tokens=4000,
            reasoning_tokens=1000,
        ),
        tier="TIER_1A",
        tier_quantity=2,
    ).estimate
    # gpt-4o: 1000 * $2.50/M = 2.5 credits; 500 * $10/M = 5 credits
    assert lines_of(answer.items[0]) == [
        ("TOKEN_CLASS_INPUT", 1000, "2.5", "2.5"),
        ("TOKEN_CLASS_OUTPUT", 500, "10", "5"),
    ]
    # sonnet 4.5: 10000 * $0.30/M = 3; 4000 * $3.75/M = 15; 1000 * $15/M = 15 credits
    assert lines_of(answer.items[1]) == [
        ("TOKEN_CLASS_CACHED_INPUT", 10_000, "0.3", "3"),
        ("TOKEN_CLASS_CACHE_WRITE", 4000, "3.75", "15"),
        ("TOKEN_CLASS_REASONING", 1000, "15", "15"),
    ]
    assert [(i.credits, i.adjustment) for i in answer.items] == [("7.5", ""), ("33", "")]
    # TIER_1A: 10 credits * 2 scenarios
    assert (answer.tier, answer.base_fee_credits) == ("TIER_1A", "20")
    assert answer.total_credits == "60.5"
    assert answer.total_usd == "0.0605"
    assert (answer.minimum_credits, answer.maximum_credits) == ("60.5", "60.5")


def test_estimate_range_with_max_output_tokens(billing: BillingServiceStub) -> None:
    answer = estimate_of(billing, gpt4o(input_tokens=1000, max_output_tokens=1001)).estimate
    # min 2.5; expected output ceil(1001/2) = 501 -> 5.01, total 7.51; max 1001 -> 10.01, 12.51
    assert (answer.minimum_credits, answer.total_credits, answer.maximum_credits) == (
        "2.5",
        "7.51",
        "12.51",
    )
    assert (
        Decimal(answer.minimum_credits)
        <= Decimal(answer.total_credits)
        <= Decimal(answer.maximum_credits)
    )
    assert lines_of(answer.items[0])[1] == ("TOKEN_CLASS_OUTPUT", 501, "10", "5.01")
    assert answer.total_usd == "0.00751"


def test_estimate_for_an_account_says_whether_it_can_pay(
    billing: BillingServiceStub, stub: CreditServiceStub
) -> None:
    make_account(stub, "small", "10")
    fits = estimate_of(billing, gpt4o(input_tokens=1000, output_tokens=500), account_id="small")
    assert (fits.covered, fits.available, fits.estimate.total_credits) == (True, "10", "7.5")
    # covered is judged on the maximum: expected 7.51 fits, maximum 12.51 does not
    ranged = estimate_of(
        billing, gpt4o(input_tokens=1000, max_output_tokens=1001), account_id="small"
    )
    assert (ranged.covered, ranged.available) == (False, "10")
    anonymous = estimate_of(billing, gpt4o(input_tokens=1))
    assert (anonymous.covered, anonymous.available) == (False, "")
    code, info, _ = error_of(
        lambda: estimate_of(billing, gpt4o(input_tokens=1), account_id="ghost")
    )
    assert (code, info.reason) == (NOT_FOUND, "ACCOUNT_NOT_FOUND")


NOT_PRICED: list[tuple[str, pricing_pb2.Usage, str, dict[str, str]]] = [
    (
        "unknown model",
        usage(gpt4o(input_tokens=1), pricing_pb2.UsageLine(provider="openai", model="gpt-99")),
        "MODEL_NOT_FOUND",
        {"model": "openai/gpt-99"},
    ),
    (
        "unknown provider",
        usage(pricing_pb2.UsageLine(provider="nobody", model="gpt-4o", input_tokens=1)),
        "MODEL_NOT_FOUND",
        {"model": "nobody/gpt-4o"},
    ),
    (
        "unknown tier",
        usage(gpt4o(input_tokens=1), tier="TIER_9"),
        "TIER_NOT_FOUND",
        {"tier": "TIER_9"},
    ),
]


@pytest.mark.parametrize(
    ("case", "u", "reason", "metadata"), NOT_PRICED, ids=[n[0] for n in NOT_PRICED]
)
def test_unknown_model_or_tier_is_not_found(
    billing: BillingServiceStub,
    case: str,
    u: pricing_pb2.Usage,
    reason: str,
    metadata: dict[str, str],
) -> None:
    code, info, _ = error_of(lambda: billing.EstimateCost(bpb.EstimateCostRequest(usage=u)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert (info.reason, dict(info.metadata), info.domain) == (reason, metadata, "creditline.dev")


BAD_USAGE: list[tuple[str, pricing_pb2.Usage, str]] = [
    (
        "negative",
        usage(gpt4o(input_tokens=1), gpt4o(output_tokens=-5)),
        "usage.lines[1].output_tokens",
    ),
    ("absurd", usage(gpt4o(cached_input_tokens=10**12 + 1)), "usage.lines[0].cached_input_tokens"),
    ("negative max", usage(gpt4o(max_output_tokens=-1)), "usage.lines[0].max_output_tokens"),
    (
        "output above max",
        usage(gpt4o(output_tokens=20, max_output_tokens=10)),
        "usage.lines[0].output_tokens",
    ),
    ("empty", usage(), "usage"),
    ("too many lines", usage(*[gpt4o(input_tokens=1)] * 101), "usage.lines"),
    ("negative tier quantity", usage(tier="TIER_1A", tier_quantity=-2), "usage.tier_quantity"),
    (
        "no model",
        usage(pricing_pb2.UsageLine(provider="openai", input_tokens=1)),
        "usage.lines[0].model",
    ),
    (
        "class without a price",
        usage(
            pricing_pb2.UsageLine(
                provider="openai", model="text-embedding-3-small", output_tokens=1
            )
        ),
        "usage.lines[0].output_tokens",
    ),
    (
        "units for a token model",
        usage(gpt4o(input_tokens=1), gpt4o(units=3)),
        "usage.lines[1].units",
    ),
    (
        "tokens for an image model",
        usage(pricing_pb2.UsageLine(provider="openai", model="dall-e-3", input_tokens=1)),
        "usage.lines[0].input_tokens",
    ),
]


@pytest.mark.parametrize(("case", "u", "field"), BAD_USAGE, ids=[b[0] for b in BAD_USAGE])
def test_bad_usage_is_invalid_argument_naming_the_field(
    billing: BillingServiceStub, case: str, u: pricing_pb2.Usage, field: str
) -> None:
    code, info, fields = error_of(lambda: billing.EstimateCost(bpb.EstimateCostRequest(usage=u)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.metadata["field"], fields) == (field, [field])


def test_without_any_price_book_estimates_are_not_found(
    server: RunningServer, empty_book: None
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        billing = BillingServiceStub(channel)
        code, info, _ = error_of(lambda: estimate_of(billing, gpt4o(input_tokens=1)))
        assert (code, info.reason) == (NOT_FOUND, "PRICE_BOOK_NOT_FOUND")
        assert list(billing.ListPriceBooks(bpb.ListPriceBooksRequest()).price_books) == []


# --- price book administration --------------------------------------------------------------------


def test_upsert_model_prices_makes_a_new_version_and_keeps_the_old(
    billing: BillingServiceStub, clock: ManualClock
) -> None:
    clock.advance(timedelta(hours=1))
    made = upsert(billing, "reprice", input_per_mtok="5.00", output_per_mtok="20")
    assert (made.price_book.version, made.price_book.model_count, made.replayed) == (2, 65, False)
    assert made.price_book.note == "repricing"
    again = upsert(billing, "reprice", input_per_mtok="5.00", output_per_mtok="20")
    assert (again.price_book.version, again.replayed) == (2, True)
    books = billing.ListPriceBooks(bpb.ListPriceBooksRequest()).price_books
    assert [(b.version, b.model_count, b.tier_count) for b in books] == [(2, 65, 3), (1, 65, 3)]
    old = billing.GetModelPrice(
        bpb.GetModelPriceRequest(provider="openai", model="gpt-4o", version=1)
    )
    new = billing.GetModelPrice(bpb.GetModelPriceRequest(provider="openai", model="gpt-4o"))
    assert (old.price.input_per_mtok, old.price.output_per_mtok, old.price_book.version) == (
        "2.5",
        "10",
        1,
    )
    assert (new.price.input_per_mtok, new.price.output_per_mtok, new.price_book.version) == (
        "5",
        "20",
        2,
    )
    # the upsert replaces the whole model price: gpt-4o's cached price is gone in version 2
    assert (old.price.cached_input_per_mtok, new.price.cached_input_per_mtok) == ("1.25", "")
    answer = estimate_of(billing, gpt4o(input_tokens=1000)).estimate
    assert (answer.price_book_version, answer.total_credits) == (2, "5")
    # paging through versions
    first = billing.ListPriceBooks(bpb.ListPriceBooksRequest(page_size=1))
    second = billing.ListPriceBooks(
        bpb.ListPriceBooksRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [b.version for b in (*first.price_books, *second.price_books)] == [2, 1]
    assert second.next_page_token == ""


def test_upsert_adds_a_model_and_changes_markup(billing: BillingServiceStub) -> None:
    made = billing.UpsertModelPrices(
        bpb.UpsertModelPricesRequest(
            prices=[
                pricing_pb2.ModelPrice(
                    provider="acme", model="search", per_request="0.005", source="https://acme"
                )
            ],
            markup="0.2",
            idempotency_key="add",
        )
    ).price_book
    assert (made.version, made.model_count, made.markup, made.credit_usd) == (2, 66, "0.2", "0.001")
    answer = estimate_of(
        billing, pricing_pb2.UsageLine(provider="acme", model="search", requests=3)
    ).estimate
    # 3 * $0.005 = $0.015 * 1.2 = $0.018 -> 18 credits
    assert (answer.total_credits, answer.markup) == ("18", "0.2")


def test_a_future_version_is_not_in_force_until_its_time(
    billing: BillingServiceStub, clock: ManualClock
) -> None:
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(clock.now() + timedelta(days=1))
    made = billing.UpsertModelPrices(
        bpb.UpsertModelPricesRequest(
            prices=[pricing_pb2.ModelPrice(provider="openai", model="gpt-4o", input_per_mtok="5")],
            effective_time=later,
            idempotency_key="future",
        )
    ).price_book
    assert made.version == 2
    assert estimate_of(billing, gpt4o(input_tokens=1000)).estimate.price_book_version == 1
    clock.advance(timedelta(days=1))
    answer = estimate_of(billing, gpt4o(input_tokens=1000)).estimate
    assert (answer.price_book_version, answer.total_credits) == (2, "5")


def test_tiers(billing: BillingServiceStub) -> None:
    listed = billing.ListTiers(bpb.ListTiersRequest())
    assert [(t.name, t.base_fee, t.fee_unit) for t in listed.tiers] == [
        ("TIER_1A", "10", "scenario"),
        ("TIER_1B", "50", "experiment"),
        ("TIER_2", "0", "run"),
    ]
    assert listed.price_book.version == 1
    made = billing.UpsertTier(
        bpb.UpsertTierRequest(
            tier=pricing_pb2.Tier(
                name="TIER_3", base_fee="2.5", fee_unit="batch", description="per batch"
            ),
            idempotency_key="tier",
        )
    )
    assert (made.tier.name, made.tier.base_fee, made.price_book.version) == ("TIER_3", "2.5", 2)
    assert made.price_book.tier_count == 4
    assert [t.name for t in billing.ListTiers(bpb.ListTiersRequest()).tiers][-1] == "TIER_3"
    assert len(billing.ListTiers(bpb.ListTiersRequest(version=1)).tiers) == 3
    answer = estimate_of(billing, tier="TIER_3", tier_quantity=4).estimate
    assert (answer.base_fee_credits, answer.total_credits, len(answer.items)) == ("10", "10", 0)
    # replacing a tier's fee is another version
    billing.UpsertTier(
        bpb.UpsertTierRequest(
            tier=pricing_pb2.Tier(name="TIER_1A", base_fee="12"), idempotency_key="tier-2"
        )
    )
    assert estimate_of(billing, tier="TIER_1A").estimate.total_credits == "12"
    old = billing.ListTiers(bpb.ListTiersRequest(version=1)).tiers
    assert old[0].base_fee == "10"


def test_account_overrides_change_only_that_account(
    billing: BillingServiceStub, stub: CreditServiceStub, clock: ManualClock
) -> None:
    make_account(stub, "alice", "100")
    make_account(stub, "bob", "100")
    gpt = gpt4o(input_tokens=1000, output_tokens=500)
    set_ = discount(billing, "alice", "12.5", "disc")
    assert set_.override_id.startswith("ovr_")
    assert (set_.account_id, set_.model, set_.discount_percent) == ("alice", "gpt-4o", "12.5")
    clock.advance(timedelta(seconds=1))
    fixed = billing.SetAccountPriceOverride(
        bpb.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id="alice",
                provider="anthropic",
                model="claude-sonnet-4-5-20250929",
                fixed_price=pricing_pb2.ModelPrice(input_per_mtok="1", output_per_mtok="5"),
            ),
            idempotency_key="fixed",
        )
    ).override
    assert fixed.fixed_price.input_per_mtok == "1"
    sonnet = pricing_pb2.UsageLine(
        provider="anthropic", model="claude-sonnet-4-5-20250929", input_tokens=1000
    )
    alice = estimate_of(billing, gpt, sonnet, account_id="alice").estimate
    # gpt-4o: 7.5 credits * 0.875 = 6.5625; sonnet fixed: 1000 * $1/M = 1 credit
    assert [(i.credits, i.adjustment) for i in alice.items] == [
        ("6.5625", f"discount 12.5% {set_.override_id}"),
        ("1", f"fixed price {fixed.override_id}"),
    ]
    assert lines_of(alice.items[1]) == [("TOKEN_CLASS_INPUT", 1000, "1", "1")]
    bob = estimate_of(billing, gpt, sonnet, account_id="bob").estimate
    anyone = estimate_of(billing, gpt, sonnet).estimate
    # list prices: 7.5 + 1000 * $3/M = 3 credits
    assert bob.total_credits == anyone.total_credits == "10.5"
    assert [i.adjustment for i in bob.items] == ["", ""]
    listed = billing.ListAccountPriceOverrides(
        bpb.ListAccountPriceOverridesRequest(account_id="alice")
    ).overrides
    assert [o.override_id for o in listed] == [fixed.override_id, set_.override_id]
    assert not billing.ListAccountPriceOverrides(
        bpb.ListAccountPriceOverridesRequest(account_id="bob")
    ).overrides
    # a newer override replaces the older one; a provider-wide one does not beat the exact model
    clock.advance(timedelta(seconds=1))
    discount(billing, "alice", "50", "wide", model="*")
    clock.advance(timedelta(seconds=1))
    newer = discount(billing, "alice", "20", "disc-2")
    alice = estimate_of(billing, gpt, account_id="alice").estimate
    assert (alice.total_credits, alice.items[0].adjustment) == (
        "6",
        f"discount 20% {newer.override_id}",
    )


def test_an_override_with_an_expiry_stops_applying(
    billing: BillingServiceStub, acct: str, clock: ManualClock
) -> None:
    until = timestamp_pb2.Timestamp()
    until.FromDatetime(clock.now() + timedelta(hours=1))
    billing.SetAccountPriceOverride(
        bpb.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id=acct,
                provider="openai",
                model="gpt-4o",
                discount_percent="100",
                expire_time=until,
            ),
            idempotency_key="free-hour",
        )
    )
    assert (
        estimate_of(billing, gpt4o(input_tokens=1000), account_id=acct).estimate.total_credits
        == "0"
    )
    clock.advance(timedelta(hours=1))
    assert (
        estimate_of(billing, gpt4o(input_tokens=1000), account_id=acct).estimate.total_credits
        == "2.5"
    )


def override_request(**fields: Any) -> bpb.SetAccountPriceOverrideRequest:
    base: dict[str, Any] = {"account_id": "acct", "provider": "openai", "model": "gpt-4o"}
    return bpb.SetAccountPriceOverrideRequest(
        override=pricing_pb2.AccountPriceOverride(**{**base, **fields}), idempotency_key="ovr"
    )


def prices_request(**fields: Any) -> bpb.UpsertModelPricesRequest:
    base: dict[str, Any] = {"provider": "openai", "model": "gpt-4o", "input_per_mtok": "1"}
    return bpb.UpsertModelPricesRequest(
        prices=[pricing_pb2.ModelPrice(**{**base, **fields})], idempotency_key="prices"
    )


REFUSED_ADMIN: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    # (case, rpc, request, code, field or reason)
    (
        "negative price",
        "UpsertModelPrices",
        prices_request(input_per_mtok="-1"),
        INVALID,
        "prices[0].input_per_mtok",
    ),
    (
        "price with exponent",
        "UpsertModelPrices",
        prices_request(output_per_mtok="1e2"),
        INVALID,
        "prices[0].output_per_mtok",
    ),
    (
        "absurd price",
        "UpsertModelPrices",
        prices_request(input_per_mtok="1000001"),
        INVALID,
        "prices[0].input_per_mtok",
    ),
    (
        "per_unit without unit",
        "UpsertModelPrices",
        prices_request(per_unit="0.04"),
        INVALID,
        "prices[0].unit",
    ),
    ("no price", "UpsertModelPrices", prices_request(input_per_mtok=""), INVALID, "prices[0]"),
    ("star model", "UpsertModelPrices", prices_request(model="*"), INVALID, "prices[0].model"),
    (
        "bad provider",
        "UpsertModelPrices",
        prices_request(provider="Open AI"),
        INVALID,
        "prices[0].provider",
    ),
    (
        "nothing to change",
        "UpsertModelPrices",
        bpb.UpsertModelPricesRequest(idempotency_key="k"),
        INVALID,
        "prices",
    ),
    (
        "zero credit value",
        "UpsertModelPrices",
        bpb.UpsertModelPricesRequest(credit_usd="0", idempotency_key="k"),
        INVALID,
        "credit_usd",
    ),
    (
        "bad tier name",
        "UpsertTier",
        bpb.UpsertTierRequest(
            tier=pricing_pb2.Tier(name="tier 3", base_fee="1"), idempotency_key="k"
        ),
        INVALID,
        "tier.name",
    ),
    (
        "negative tier fee",
        "UpsertTier",
        bpb.UpsertTierRequest(tier=pricing_pb2.Tier(name="T", base_fee="-1"), idempotency_key="k"),
        INVALID,
        "tier.base_fee",
    ),
    (
        "both fixed and discount",
        "SetAccountPriceOverride",
        override_request(
            discount_percent="10", fixed_price=pricing_pb2.ModelPrice(input_per_mtok="1")
        ),
        INVALID,
        "override",
    ),
    (
        "neither fixed nor discount",
        "SetAccountPriceOverride",
        override_request(),
        INVALID,
        "override",
    ),
    (
        "discount over 100",
        "SetAccountPriceOverride",
        override_request(discount_percent="100.5"),
        INVALID,
        "override.discount_percent",
    ),
    (
        "negative discount",
        "SetAccountPriceOverride",
        override_request(discount_percent="-5"),
        INVALID,
        "override.discount_percent",
    ),
    (
        "over-precise discount",
        "SetAccountPriceOverride",
        override_request(discount_percent="1.00001"),
        INVALID,
        "override.discount_percent",
    ),
    (
        "negative fixed price",
        "SetAccountPriceOverride",
        override_request(fixed_price=pricing_pb2.ModelPrice(input_per_mtok="-1")),
        INVALID,
        "override.fixed_price.input_per_mtok",
    ),
    (
        "fixed price for all models",
        "SetAccountPriceOverride",
        override_request(model="*", fixed_price=pricing_pb2.ModelPrice(input_per_mtok="1")),
        INVALID,
        "override.model",
    ),
    (
        "discount on unknown model",
        "SetAccountPriceOverride",
        override_request(model="gpt-99", discount_percent="10"),
        NOT_FOUND,
        "MODEL_NOT_FOUND",
    ),
    (
        "override already expired",
        "SetAccountPriceOverride",
        override_request(
            discount_percent="10", expire_time=timestamp_pb2.Timestamp(seconds=1_000_000)
        ),
        INVALID,
        "override.expire_time",
    ),
    (
        "provider-wide discount for an unknown provider",
        "SetAccountPriceOverride",
        override_request(provider="nobody", model="*", discount_percent="10"),
        NOT_FOUND,
        "MODEL_NOT_FOUND",
    ),
    (
        "override for unknown account",
        "SetAccountPriceOverride",
        override_request(account_id="ghost", discount_percent="10"),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    ),
    (
        "overrides of unknown account",
        "ListAccountPriceOverrides",
        bpb.ListAccountPriceOverridesRequest(account_id="ghost"),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    ),
    (
        "unknown version",
        "GetModelPrice",
        bpb.GetModelPriceRequest(provider="openai", model="gpt-4o", version=9),
        NOT_FOUND,
        "PRICE_BOOK_NOT_FOUND",
    ),
    (
        "unknown model price",
        "GetModelPrice",
        bpb.GetModelPriceRequest(provider="openai", model="gpt-99"),
        NOT_FOUND,
        "MODEL_NOT_FOUND",
    ),
    (
        "tiers of unknown version",
        "ListTiers",
        bpb.ListTiersRequest(version=9),
        NOT_FOUND,
        "PRICE_BOOK_NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("case", "rpc", "request_", "code", "detail"), REFUSED_ADMIN, ids=[r[0] for r in REFUSED_ADMIN]
)
def test_bad_admin_input_is_refused_writing_nothing(
    billing: BillingServiceStub,
    acct: str,
    engine: Engine,
    case: str,
    rpc: str,
    request_: Any,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    before = counts(engine)
    got, info, fields = error_of(lambda: getattr(billing, rpc)(request_))
    assert got == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert (info.metadata["field"], fields) == (detail, [detail])
    else:
        assert info.reason == detail
    assert counts(engine) == before


# --- estimate-sized holds -------------------------------------------------------------------------


def test_hold_is_sized_at_the_maximum_and_commit_prices_at_the_pinned_version(
    billing: BillingServiceStub, stub: CreditServiceStub, acct: str, clock: ManualClock
) -> None:
    hold = reserve(stub, acct, gpt4o(input_tokens=1000, max_output_tokens=1000))
    # maximum: 1000 input -> 2.5 credits; 1000 output -> 10 credits
    assert hold.amount == "12.5"
    assert (hold.estimate.price_book_version, hold.estimate.total_credits) == (1, "12.5")
    assert hold.overrun_policy == ALLOW
    assert balance(stub, acct) == ("100", "12.5", "87.5")
    stored = stub.GetReservation(cpb.GetReservationRequest(reservation_id=hold.reservation_id))
    assert stored.reservation.estimate == hold.estimate

    clock.advance(timedelta(minutes=1))
    assert (
        upsert(billing, "double", input_per_mtok="5", output_per_mtok="20").price_book.version == 2
    )
    fresh = estimate_of(billing, gpt4o(input_tokens=1000, output_tokens=400)).estimate
    # at version 2: 1000 * $5/M = 5; 400 * $20/M = 8 credits
    assert (fresh.price_book_version, fresh.total_credits) == (2, "13")

    done = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=400))
    # at the pinned version 1: 2.5 + 400 * $10/M = 2.5 + 4 = 6.5 credits
    assert (done.charged, done.actual_cost.total_credits) == ("6.5", "6.5")
    assert done.actual_cost.price_book_version == 1
    assert done.reservation.committed_amount == "6.5"
    rows = [
        (
            TC.Name(c.token_class),
            c.estimated_quantity,
            c.actual_quantity,
            c.estimated_credits,
            c.actual_credits,
        )
        for c in done.comparisons
    ]
    assert [(c.provider, c.model) for c in done.comparisons] == [("openai", "gpt-4o")] * 2
    assert rows == [
        ("TOKEN_CLASS_INPUT", 1000, 1000, "2.5", "2.5"),
        ("TOKEN_CLASS_OUTPUT", 1000, 400, "10", "4"),
    ]
    entry = done.ledger_entry
    assert (entry.amount, entry.price_book_version, entry.feature) == ("-6.5", 1, "chat")
    assert [(u.provider, u.model, u.input_tokens, u.output_tokens) for u in entry.usage] == [
        ("openai", "gpt-4o", 1000, 400)
    ]
    assert not entry.usage[0].HasField("max_output_tokens")
    (listed,) = spend_entries(stub, acct)
    assert (listed.entry_id, listed.price_book_version, listed.usage) == (
        entry.entry_id,
        1,
        entry.usage,
    )
    assert balance(stub, acct) == ("93.5", "0", "93.5")
    replay = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=400))
    assert (replay.replayed, replay.charged, replay.ledger_entry.entry_id) == (
        True,
        "6.5",
        entry.entry_id,
    )


def test_a_commit_may_report_classes_the_estimate_did_not_have(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    hold = reserve(stub, acct, gpt4o(input_tokens=2000, output_tokens=100, max_output_tokens=500))
    # held: 2000 -> 5 credits; 500 output -> 5 credits
    assert hold.amount == "10"
    done = commit(
        stub,
        hold.reservation_id,
        gpt4o(input_tokens=1000, cached_input_tokens=800, output_tokens=300),
    )
    # 1000 -> 2.5; cached 800 * $1.25/M = $0.001 -> 1; 300 output -> 3 credits
    assert done.charged == "6.5"
    rows = [
        (TC.Name(c.token_class), c.estimated_quantity, c.actual_quantity, c.actual_credits)
        for c in done.comparisons
    ]
    assert rows == [
        ("TOKEN_CLASS_INPUT", 2000, 1000, "2.5"),
        ("TOKEN_CLASS_OUTPUT", 500, 300, "3"),
        ("TOKEN_CLASS_CACHED_INPUT", 0, 800, "1"),
    ]


OVER = (gpt4o(input_tokens=1000, max_output_tokens=1000),)  # held 12.5 credits
ACTUAL_OVER = gpt4o(input_tokens=1000, output_tokens=2000)  # 2.5 + 20 = 22.5 credits


def test_overrun_reject_refuses_and_keeps_the_hold(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str, engine: Engine
) -> None:
    hold = reserve(stub, acct, *OVER, policy=REJECT)
    assert hold.overrun_policy == REJECT
    before = counts(engine)
    code, info, _ = error_of(lambda: commit(stub, hold.reservation_id, ACTUAL_OVER))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.reason, dict(info.metadata)) == (
        "OVERRUN_REJECTED",
        {"held": "12.5", "actual": "22.5"},
    )
    got = stub.GetReservation(cpb.GetReservationRequest(reservation_id=hold.reservation_id))
    assert got.reservation.status == ACTIVE
    assert balance(stub, acct) == ("100", "12.5", "87.5")
    assert spend_entries(stub, acct) == []
    assert counts(engine) == before
    # within the hold the commit goes through
    done = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=1000), key="c2")
    assert done.charged == "12.5"


def test_overrun_cap_charges_the_hold(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    hold = reserve(stub, acct, *OVER, policy=CAP)
    done = commit(stub, hold.reservation_id, ACTUAL_OVER)
    assert (done.charged, done.actual_cost.total_credits) == ("12.5", "22.5")
    assert (done.ledger_entry.amount, done.reservation.committed_amount) == ("-12.5", "12.5")
    assert balance(stub, acct) == ("87.5", "0", "87.5")


@pytest.mark.parametrize(
    "policy", [ALLOW, pricing_pb2.OVERRUN_POLICY_UNSPECIFIED], ids=["allow", "unspecified"]
)
def test_overrun_allow_charges_the_actual_from_the_balance(
    stub: CreditServiceStub,
    billing: BillingServiceStub,
    acct: str,
    policy: pricing_pb2.OverrunPolicy.ValueType,
) -> None:
    hold = reserve(stub, acct, *OVER, policy=policy)
    assert hold.overrun_policy == ALLOW
    done = commit(stub, hold.reservation_id, ACTUAL_OVER)
    assert (done.charged, done.ledger_entry.amount) == ("22.5", "-22.5")
    assert balance(stub, acct) == ("77.5", "0", "77.5")


def test_overrun_allow_needs_the_difference_available(
    stub: CreditServiceStub, billing: BillingServiceStub
) -> None:
    make_account(stub, "poor", "15")
    hold = reserve(stub, "poor", *OVER, policy=ALLOW)
    code, info, _ = error_of(lambda: commit(stub, hold.reservation_id, ACTUAL_OVER))
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    # 10 more credits were needed beyond the hold; 2.5 were available
    assert (info.metadata["required"], info.metadata["available"]) == ("10", "2.5")
    got = stub.GetReservation(cpb.GetReservationRequest(reservation_id=hold.reservation_id))
    assert got.reservation.status == ACTIVE
    assert balance(stub, "poor") == ("15", "12.5", "2.5")


def test_an_override_set_after_the_hold_does_not_change_the_commit(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str, clock: ManualClock
) -> None:
    before = discount(billing, acct, "20", "before")
    hold = reserve(stub, acct, gpt4o(input_tokens=1000, max_output_tokens=1000))
    # the override in force at the hold applies: 12.5 * 0.8 = 10 credits
    assert hold.amount == "10"
    assert hold.estimate.items[0].adjustment == f"discount 20% {before.override_id}"
    clock.advance(timedelta(seconds=1))
    discount(billing, acct, "50", "after")
    now = estimate_of(billing, gpt4o(input_tokens=1000, output_tokens=1000), account_id=acct)
    assert now.estimate.total_credits == "6.25"  # 12.5 * 0.5 for a new estimate
    done = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=1000))
    assert done.charged == "10"  # still 20 % off, as pinned
    assert done.actual_cost.items[0].adjustment == f"discount 20% {before.override_id}"


def test_commit_with_usage_on_an_amount_hold_prices_at_the_version_of_the_hold(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str, clock: ManualClock
) -> None:
    hold = stub.ReserveCredits(
        cpb.ReserveCreditsRequest(account_id=acct, amount="20", idempotency_key="amount-hold")
    ).reservation
    assert not hold.HasField("estimate")
    clock.advance(timedelta(minutes=1))
    upsert(billing, "double", input_per_mtok="5", output_per_mtok="20")
    done = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=400))
    assert (done.charged, done.actual_cost.price_book_version) == ("6.5", 1)
    assert list(done.comparisons) == []
    assert done.ledger_entry.price_book_version == 1


def test_a_plain_amount_commit_has_no_pricing(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    hold = reserve(stub, acct, gpt4o(input_tokens=1000))
    done = stub.CommitReservation(
        cpb.CommitReservationRequest(
            reservation_id=hold.reservation_id, amount="2", idempotency_key="plain"
        )
    )
    assert (done.charged, done.ledger_entry.price_book_version, list(done.ledger_entry.usage)) == (
        "2",
        0,
        [],
    )
    assert not done.HasField("actual_cost")


def hold_request(**fields: Any) -> cpb.ReserveCreditsRequest:
    return cpb.ReserveCreditsRequest(**{"account_id": "acct", "idempotency_key": "h", **fields})


def commit_request(**fields: Any) -> cpb.CommitReservationRequest:
    return cpb.CommitReservationRequest(**{"idempotency_key": "c", **fields})


BAD_HOLDS: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    (
        "amount and estimate",
        "ReserveCredits",
        hold_request(amount="5", estimate=usage(gpt4o(input_tokens=1))),
        INVALID,
        "amount",
    ),
    ("neither amount nor estimate", "ReserveCredits", hold_request(), INVALID, "amount"),
    ("empty estimate", "ReserveCredits", hold_request(estimate=usage()), INVALID, "estimate"),
    (
        "negative estimate",
        "ReserveCredits",
        hold_request(estimate=usage(gpt4o(input_tokens=-1))),
        INVALID,
        "estimate.lines[0].input_tokens",
    ),
    (
        "unpriced class in estimate",
        "ReserveCredits",
        hold_request(estimate=usage(gpt4o(units=1))),
        INVALID,
        "estimate.lines[0].units",
    ),
    (
        "unknown policy",
        "ReserveCredits",
        hold_request(estimate=usage(gpt4o(input_tokens=1)), overrun_policy=9),
        INVALID,
        "overrun_policy",
    ),
    (
        "unknown model in estimate",
        "ReserveCredits",
        hold_request(
            estimate=usage(
                gpt4o(input_tokens=1),
                pricing_pb2.UsageLine(provider="openai", model="gpt-99", input_tokens=1),
            )
        ),
        NOT_FOUND,
        "MODEL_NOT_FOUND",
    ),
    (
        "unknown tier in estimate",
        "ReserveCredits",
        hold_request(estimate=usage(gpt4o(input_tokens=1), tier="NOPE")),
        NOT_FOUND,
        "TIER_NOT_FOUND",
    ),
    (
        "commit amount and usage",
        "CommitReservation",
        commit_request(
            reservation_id="rsv_x", amount="1", actual_usage=usage(gpt4o(input_tokens=1))
        ),
        INVALID,
        "amount",
    ),
    (
        "commit neither",
        "CommitReservation",
        commit_request(reservation_id="rsv_x"),
        INVALID,
        "amount",
    ),
    (
        "commit with a maximum",
        "CommitReservation",
        commit_request(
            reservation_id="rsv_x", actual_usage=usage(gpt4o(input_tokens=1, max_output_tokens=5))
        ),
        INVALID,
        "actual_usage.lines[0].max_output_tokens",
    ),
    (
        "commit with absurd usage",
        "CommitReservation",
        commit_request(reservation_id="rsv_x", actual_usage=usage(gpt4o(output_tokens=10**13))),
        INVALID,
        "actual_usage.lines[0].output_tokens",
    ),
]


@pytest.mark.parametrize(
    ("case", "rpc", "request_", "code", "detail"), BAD_HOLDS, ids=[b[0] for b in BAD_HOLDS]
)
def test_bad_holds_and_commits_are_refused_writing_nothing(
    billing: BillingServiceStub,
    stub: CreditServiceStub,
    acct: str,
    engine: Engine,
    case: str,
    rpc: str,
    request_: Any,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    before = counts(engine)
    got, info, fields = error_of(lambda: getattr(stub, rpc)(request_))
    assert got == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert (info.metadata["field"], fields) == (detail, [detail])
    else:
        assert info.reason == detail
    assert counts(engine) == before
    assert balance(stub, acct) == ("100", "0", "100")


def test_commit_usage_with_an_unpriced_class_is_refused_and_the_hold_stays(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    hold = reserve(stub, acct, gpt4o(input_tokens=1000))
    code, info, fields = error_of(
        lambda: commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, requests=1))
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["actual_usage.lines[0].requests"])
    code, info, _ = error_of(
        lambda: commit(
            stub,
            hold.reservation_id,
            pricing_pb2.UsageLine(provider="openai", model="gpt-99", input_tokens=1),
            key="c2",
        )
    )
    assert (code, info.reason) == (NOT_FOUND, "MODEL_NOT_FOUND")
    got = stub.GetReservation(cpb.GetReservationRequest(reservation_id=hold.reservation_id))
    assert got.reservation.status == ACTIVE


def test_a_fixed_override_is_pinned_by_the_hold(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str, clock: ManualClock
) -> None:
    billing.SetAccountPriceOverride(
        bpb.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id=acct,
                provider="openai",
                model="gpt-4o",
                fixed_price=pricing_pb2.ModelPrice(input_per_mtok="1", output_per_mtok="2"),
            ),
            idempotency_key="fixed",
        )
    )
    hold = reserve(stub, acct, gpt4o(input_tokens=1000, max_output_tokens=1000))
    # 1000 * $1/M = 1 credit; 1000 * $2/M = 2 credits
    assert hold.amount == "3"
    clock.advance(timedelta(seconds=1))
    discount(billing, acct, "50", "after")
    done = commit(stub, hold.reservation_id, gpt4o(input_tokens=1000, output_tokens=1000))
    assert done.charged == "3"


def test_an_estimate_hold_is_idempotent(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    first = reserve(stub, acct, gpt4o(input_tokens=1000))
    again = stub.ReserveCredits(
        cpb.ReserveCreditsRequest(
            account_id=acct,
            estimate=usage(gpt4o(input_tokens=1000)),
            idempotency_key="hold",
            feature="chat",
        )
    )
    assert (again.replayed, again.reservation) == (True, first)
    _, info, _ = error_of(lambda: reserve(stub, acct, gpt4o(input_tokens=1001)))
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert balance(stub, acct) == ("100", "2.5", "97.5")


def test_an_estimate_hold_beyond_the_balance_is_insufficient(
    stub: CreditServiceStub, billing: BillingServiceStub, acct: str
) -> None:
    # 100 lines of 10^12 output tokens at $10/M: 10^9 credits each, far beyond any balance
    code, info, _ = error_of(lambda: reserve(stub, acct, *[gpt4o(output_tokens=10**12)] * 100))
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    assert balance(stub, acct) == ("100", "0", "100")


# --- listing, concurrency, and the balance an estimate reports ------------------------------------


def test_model_prices_of_one_provider_page_by_page(billing: BillingServiceStub) -> None:
    got: list[str] = []
    token = ""
    while True:
        page = billing.ListModelPrices(
            bpb.ListModelPricesRequest(provider="openai", page_size=5, page_token=token)
        )
        got += [p.model for p in page.prices]
        token = page.next_page_token
        if not token:
            break
    assert got == [m.model for m in DEFAULT.models if m.provider == "openai"]


def change_prices_concurrently(billing: BillingServiceStub, writers: int) -> list[int]:
    start = threading.Barrier(writers)

    def change(i: int) -> int:
        start.wait()
        return upsert(billing, f"c{i}", input_per_mtok=f"{i + 1}").price_book.version

    with ThreadPoolExecutor(writers) as pool:
        return sorted(pool.map(change, range(writers)))


def test_concurrent_price_changes_each_make_a_version(billing: BillingServiceStub) -> None:
    assert change_prices_concurrently(billing, 4) == [2, 3, 4, 5]
    books = billing.ListPriceBooks(bpb.ListPriceBooksRequest()).price_books
    assert [b.version for b in books] == [5, 4, 3, 2, 1]


def test_many_concurrent_price_changes_each_make_a_version(billing: BillingServiceStub) -> None:
    assert change_prices_concurrently(billing, 10) == list(range(2, 12))


def test_estimate_available_applies_due_expiries(
    billing: BillingServiceStub, stub: CreditServiceStub, clock: ManualClock
) -> None:
    until = timestamp_pb2.Timestamp()
    until.FromDatetime(clock.now() + timedelta(hours=1))
    stub.CreateAccount(
        cpb.CreateAccountRequest(
            account=account_pb2.Account(
                account_id="fleeting", billing_mode=account_pb2.BILLING_MODE_PREPAID
            ),
            idempotency_key="create",
        )
    )
    stub.GrantCredits(
        cpb.GrantCreditsRequest(
            account_id="fleeting",
            amount="10",
            source=grant_pb2.GRANT_SOURCE_PROMOTIONAL,
            expire_time=until,
            idempotency_key="grant",
        )
    )
    assert estimate_of(billing, gpt4o(input_tokens=1000), account_id="fleeting").covered
    clock.advance(timedelta(hours=2))
    answer = estimate_of(billing, gpt4o(input_tokens=1000), account_id="fleeting")
    assert (answer.available, answer.covered) == ("0", False)
    assert balance(stub, "fleeting")[2] == "0"


def test_estimate_available_releases_expired_holds(
    billing: BillingServiceStub, stub: CreditServiceStub, acct: str, clock: ManualClock
) -> None:
    stub.ReserveCredits(
        cpb.ReserveCreditsRequest(
            account_id=acct,
            amount="90",
            ttl=duration_pb2.Duration(seconds=30),
            idempotency_key="short",
        )
    )
    clock.advance(timedelta(seconds=31))
    # the hold of 90 expired 1 s ago; no sweeper has run, yet the estimate sees it released
    answer = estimate_of(billing, gpt4o(input_tokens=1000), account_id=acct)
    assert (answer.available, answer.covered) == ("100", True)


def test_an_estimate_that_prices_to_zero_holds_nothing_and_settles_free(
    billing: BillingServiceStub, stub: CreditServiceStub, acct: str
) -> None:
    """A fully discounted account (or a free tier) may still run: the hold pins the pricing."""
    billing.SetAccountPriceOverride(
        bpb.SetAccountPriceOverrideRequest(
            override=pricing_pb2.AccountPriceOverride(
                account_id=acct, provider="openai", model="*", discount_percent="100"
            ),
            idempotency_key="free",
        )
    )
    hold = stub.ReserveCredits(
        hold_request(estimate=usage(gpt4o(input_tokens=1000, max_output_tokens=500)))
    ).reservation
    assert hold.amount == "0"
    done = stub.CommitReservation(
        commit_request(
            reservation_id=hold.reservation_id,
            actual_usage=usage(gpt4o(input_tokens=1000, output_tokens=400)),
        )
    )
    assert (done.charged, done.actual_cost.total_credits) == ("0", "0")
    assert not done.HasField("ledger_entry")
    assert stub.GetBalance(cpb.GetBalanceRequest(account_id=acct)).balance.balance == "100"
