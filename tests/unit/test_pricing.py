"""The pricing domain against hand-computed figures: every class of token, markup, credit value,
tier fees, account overrides, the rounding rule (each line exact, then up to the micro-credit;
totals are sums of rounded lines), output ranges, usage validation, overrun policies and the
estimate-versus-actual comparison. A hypothesis property checks the rule against an exact
Fraction oracle.

Amounts are in micro-credits (1 credit = 1_000_000) unless a comment says credits.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_service.domain.errors import FailedPrecondition, InvalidField, NotFound
from billing_service.domain.pricing import (
    MAX_LINES,
    MAX_QUANTITY,
    QUANTITY_FIELD,
    Cost,
    ModelPrice,
    OverrunPolicy,
    PriceBook,
    PriceOverride,
    Tier,
    TokenClass,
    Usage,
    UsageLine,
    charge_for_overrun,
    compare,
    estimate,
    price_case,
    validate_usage,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
C = 1_000_000  # micro-credits per credit

GPT_4O = ModelPrice(
    "openai",
    "gpt-4o",
    input_per_mtok=Decimal("2.50"),
    cached_input_per_mtok=Decimal("1.25"),
    output_per_mtok=Decimal("10.00"),
)
SONNET = ModelPrice(
    "anthropic",
    "claude-sonnet",
    input_per_mtok=Decimal("3.00"),
    cached_input_per_mtok=Decimal("0.30"),
    cache_write_per_mtok=Decimal("3.75"),
    output_per_mtok=Decimal("15.00"),
)
REASONER = ModelPrice(
    "openai",
    "o-own",
    input_per_mtok=Decimal("2"),
    output_per_mtok=Decimal("8"),
    reasoning_per_mtok=Decimal("12"),
)
REASONER_NO_OWN = ModelPrice(
    "openai", "o-fallback", input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8")
)
SEARCH = ModelPrice("acme", "search", per_request=Decimal("0.005"))
IMAGES = ModelPrice("openai", "dall-e-3", per_unit=Decimal("0.04"), unit="image")
WHISPER = ModelPrice("openai", "whisper-1", per_unit=Decimal("0.0001"), unit="second")
TTS = ModelPrice("openai", "tts-1", per_unit=Decimal("0.000015"), unit="character")
EMBED = ModelPrice("openai", "text-embedding-3-small", input_per_mtok=Decimal("0.02"))
R7B = ModelPrice(
    "cohere", "command-r7b", input_per_mtok=Decimal("0.0375"), output_per_mtok=Decimal("0.15")
)
TINY = ModelPrice("acme", "tiny", input_per_mtok=Decimal("0.0001"))
MODELS = (GPT_4O, SONNET, REASONER, REASONER_NO_OWN, SEARCH, IMAGES, WHISPER, TTS, EMBED, R7B, TINY)
TIERS = (
    Tier("TIER_1A", 10 * C, "scenario", ""),
    Tier("TIER_FREE", 0, "run", ""),
)


def book(credit_usd: str = "0.001", markup: str = "0", version: int = 1) -> PriceBook:
    return PriceBook(
        version=version,
        effective_at=NOW - timedelta(days=1),
        credit_usd=Decimal(credit_usd),
        markup=Decimal(markup),
        note="",
        created_at=NOW - timedelta(days=1),
        models=MODELS,
        tiers=TIERS,
    )


def line(model: ModelPrice, **counts: int) -> UsageLine:
    return UsageLine(model.provider, model.model, **counts)


def usage(*lines: UsageLine, tier: str = "", tier_quantity: int = 0) -> Usage:
    return Usage(lines=lines, tier=tier, tier_quantity=tier_quantity)


def cost(
    *lines: UsageLine,
    overrides: tuple[PriceOverride, ...] = (),
    credit_usd: str = "0.001",
    markup: str = "0",
) -> Cost:
    return estimate(book(credit_usd, markup), usage(*lines), overrides, NOW)


def by_class(result: Cost, item: int = 0) -> dict[TokenClass, tuple[int, Decimal, int]]:
    return {
        cl.token_class: (cl.quantity, cl.unit_price, cl.credits) for cl in result.items[item].lines
    }


def override(
    model: str = "gpt-4o",
    *,
    provider: str = "openai",
    discount: str | None = None,
    fixed: ModelPrice | None = None,
    created: datetime = NOW - timedelta(hours=1),
    effective: datetime | None = None,
    expires: datetime | None = None,
    id_: str = "ovr_1",
) -> PriceOverride:
    return PriceOverride(
        id=id_,
        account_id="acct",
        provider=provider,
        model=model,
        fixed=fixed,
        discount_percent=None if discount is None else Decimal(discount),
        effective_at=effective or created,
        expires_at=expires,
        created_at=created,
    )


# --- list prices, every token class ---------------------------------------------------------


def test_input_and_output() -> None:
    result = cost(line(GPT_4O, input_tokens=1000, output_tokens=500))
    # input:  1000 * $2.50/M = $0.0025 / $0.001 = 2.5 credits
    # output:  500 * $10/M   = $0.005  / $0.001 = 5 credits
    assert by_class(result) == {
        TokenClass.INPUT: (1000, Decimal("2.50"), 2_500_000),
        TokenClass.OUTPUT: (500, Decimal("10.00"), 5_000_000),
    }
    assert result.items[0].credits == 7_500_000
    assert (result.total, result.minimum, result.maximum) == (7_500_000,) * 3
    assert result.total_usd == Decimal("0.0075")  # 7.5 credits * $0.001
    assert (result.version, result.tier, result.base_fee) == (1, "", 0)
    assert result.items[0].adjustment == ""


def test_cached_input_and_cache_writes() -> None:
    result = cost(
        line(
            SONNET,
            input_tokens=2000,
            cached_input_tokens=10_000,
            cache_write_tokens=4000,
            output_tokens=1000,
        )
    )
    # input        2000 * $3/M    = $0.006 -> 6 credits
    # cached      10000 * $0.30/M = $0.003 -> 3 credits
    # cache write  4000 * $3.75/M = $0.015 -> 15 credits
    # output       1000 * $15/M   = $0.015 -> 15 credits
    assert {k: v[2] for k, v in by_class(result).items()} == {
        TokenClass.INPUT: 6 * C,
        TokenClass.CACHED_INPUT: 3 * C,
        TokenClass.CACHE_WRITE: 15 * C,
        TokenClass.OUTPUT: 15 * C,
    }
    assert result.total == 39 * C
    assert [cl.token_class for cl in result.items[0].lines] == [
        TokenClass.INPUT,
        TokenClass.CACHED_INPUT,
        TokenClass.CACHE_WRITE,
        TokenClass.OUTPUT,
    ]


def test_reasoning_with_its_own_price() -> None:
    result = cost(line(REASONER, output_tokens=1000, reasoning_tokens=1000))
    # output    1000 * $8/M  = $0.008 -> 8 credits
    # reasoning 1000 * $12/M = $0.012 -> 12 credits
    assert by_class(result)[TokenClass.REASONING] == (1000, Decimal("12"), 12 * C)
    assert result.total == 20 * C


def test_reasoning_without_its_own_price_bills_at_the_output_price() -> None:
    result = cost(line(REASONER_NO_OWN, reasoning_tokens=1000))
    # reasoning 1000 * $8/M (the output price) = $0.008 -> 8 credits
    assert by_class(result) == {TokenClass.REASONING: (1000, Decimal("8"), 8 * C)}


def test_per_request_and_per_unit() -> None:
    result = cost(
        line(SEARCH, requests=3),
        line(IMAGES, units=2),
        line(WHISPER, units=90),
        line(TTS, units=1000),
    )
    # 3 requests   * $0.005    = $0.015 -> 15 credits
    # 2 images     * $0.04     = $0.08  -> 80 credits
    # 90 seconds   * $0.0001   = $0.009 -> 9 credits
    # 1000 chars   * $0.000015 = $0.015 -> 15 credits
    assert [item.credits for item in result.items] == [15 * C, 80 * C, 9 * C, 15 * C]
    assert by_class(result, 0) == {TokenClass.REQUEST: (3, Decimal("0.005"), 15 * C)}
    assert by_class(result, 1) == {TokenClass.UNIT: (2, Decimal("0.04"), 80 * C)}
    assert result.total == 119 * C
    assert [(i.provider, i.model) for i in result.items] == [
        ("acme", "search"),
        ("openai", "dall-e-3"),
        ("openai", "whisper-1"),
        ("openai", "tts-1"),
    ]


def test_markup() -> None:
    result = cost(line(GPT_4O, input_tokens=1000, output_tokens=500), markup="0.2")
    # input  2.5 credits * 1.2 = 3 credits; output 5 credits * 1.2 = 6 credits
    assert [cl.credits for cl in result.items[0].lines] == [3 * C, 6 * C]
    # the unit price shown is the list price, before markup
    assert by_class(result)[TokenClass.INPUT][1] == Decimal("2.50")
    assert (result.total, result.markup) == (9 * C, Decimal("0.2"))


def test_credit_value_other_than_a_tenth_of_a_cent() -> None:
    cents = cost(line(GPT_4O, input_tokens=1000), credit_usd="0.01")
    # $0.0025 / $0.01 = 0.25 credits
    assert cents.total == 250_000
    assert cents.total_usd == Decimal("0.0025")
    both = cost(line(GPT_4O, input_tokens=1000), credit_usd="0.002", markup="0.5")
    # $0.0025 * 1.5 = $0.00375 / $0.002 = 1.875 credits
    assert both.total == 1_875_000
    assert both.total_usd == Decimal("0.00375")
    thirds = cost(line(GPT_4O, input_tokens=1000), credit_usd="0.003")
    # $0.0025 / $0.003 = 0.8333... credits -> rounded up to 0.833334
    assert thirds.total == 833_334


def test_tier_base_fee_times_quantity_and_not_marked_up() -> None:
    b = book(markup="0.2")
    result = estimate(
        b, usage(line(GPT_4O, input_tokens=1000), tier="TIER_1A", tier_quantity=3), (), NOW
    )
    # base fee 10 credits * 3 scenarios = 30 credits, no markup; input 2.5 * 1.2 = 3 credits
    assert (result.tier, result.base_fee) == ("TIER_1A", 30 * C)
    assert result.total == 33 * C
    # quantity 0 with a tier means one unit of work; a tier alone is valid usage
    alone = estimate(b, usage(tier="TIER_1A"), (), NOW)
    assert (alone.items, alone.base_fee, alone.total) == ((), 10 * C, 10 * C)
    free = estimate(b, usage(tier="TIER_FREE", tier_quantity=7), (), NOW)
    assert free.total == 0


# --- account overrides -----------------------------------------------------------------------


def test_discount_override() -> None:
    two = (line(GPT_4O, input_tokens=1000, output_tokens=500),)
    result = cost(*two, overrides=(override(discount="12.5"),))
    # input 2.5 credits * 0.875 = 2.1875; output 5 * 0.875 = 4.375; total 6.5625
    assert [cl.credits for cl in result.items[0].lines] == [2_187_500, 4_375_000]
    assert result.total == 6_562_500
    assert result.items[0].adjustment == "discount 12.5% ovr_1"
    marked = cost(*two, overrides=(override(discount="12.5"),), markup="0.2")
    # input 2.5 * 1.2 * 0.875 = 2.625; output 5 * 1.2 * 0.875 = 5.25
    assert marked.total == 7_875_000


def test_fixed_price_override() -> None:
    fixed = ModelPrice(
        "openai", "gpt-4o", input_per_mtok=Decimal("1.00"), output_per_mtok=Decimal("4.00")
    )
    result = cost(
        line(GPT_4O, input_tokens=1000, output_tokens=500),
        overrides=(override(fixed=fixed, id_="ovr_fix"),),
    )
    # input 1000 * $1/M = $0.001 -> 1 credit; output 500 * $4/M = $0.002 -> 2 credits
    assert by_class(result) == {
        TokenClass.INPUT: (1000, Decimal("1.00"), 1 * C),
        TokenClass.OUTPUT: (500, Decimal("4.00"), 2 * C),
    }
    assert result.items[0].adjustment == "fixed price ovr_fix"
    # a fixed price without a class refuses that class even if the list price has it
    with pytest.raises(InvalidField) as caught:
        cost(line(GPT_4O, cached_input_tokens=1), overrides=(override(fixed=fixed),))
    assert caught.value.field == "usage.lines[0].cached_input_tokens"


def test_newest_override_wins() -> None:
    older = override(discount="10", created=NOW - timedelta(hours=2), id_="ovr_old")
    newer = override(discount="20", created=NOW - timedelta(hours=1), id_="ovr_new")
    for order in ((older, newer), (newer, older)):
        result = cost(line(GPT_4O, input_tokens=1000), overrides=order)
        # 2.5 credits * 0.8 = 2 credits
        assert result.total == 2 * C
        assert result.items[0].adjustment == "discount 20% ovr_new"


def test_exact_model_override_beats_provider_wide_override() -> None:
    exact = override(discount="10", created=NOW - timedelta(hours=2), id_="ovr_exact")
    wide = override("*", discount="50", created=NOW - timedelta(hours=1), id_="ovr_wide")
    result = cost(
        line(GPT_4O, input_tokens=1000),
        line(EMBED, input_tokens=1_000_000),
        overrides=(exact, wide),
    )
    # gpt-4o: 2.5 credits * 0.9 = 2.25 (exact wins though older)
    # embedding: 1M * $0.02/M = $0.02 -> 20 credits * 0.5 = 10 (only '*' applies)
    assert [i.credits for i in result.items] == [2_250_000, 10 * C]
    assert [i.adjustment for i in result.items] == [
        "discount 10% ovr_exact",
        "discount 50% ovr_wide",
    ]
    # another provider's '*' does not apply
    other = override("*", provider="anthropic", discount="50")
    assert cost(line(GPT_4O, input_tokens=1000), overrides=(other,)).total == 2_500_000


def test_expired_and_future_overrides_are_ignored() -> None:
    expired = override(
        discount="50", created=NOW - timedelta(days=2), expires=NOW, id_="ovr_expired"
    )
    future = override(
        discount="50",
        created=NOW - timedelta(hours=1),
        effective=NOW + timedelta(seconds=1),
        id_="ovr_future",
    )
    result = cost(line(GPT_4O, input_tokens=1000), overrides=(expired, future))
    assert (result.total, result.items[0].adjustment) == (2_500_000, "")
    # a newer override not yet in force leaves the older one in force
    current = override(discount="10", created=NOW - timedelta(days=3), id_="ovr_current")
    result = cost(line(GPT_4O, input_tokens=1000), overrides=(current, future))
    assert result.items[0].adjustment == "discount 10% ovr_current"


# --- the rounding rule ------------------------------------------------------------------------


def test_a_line_is_rounded_up_to_the_micro_credit() -> None:
    result = cost(line(R7B, input_tokens=1, output_tokens=1))
    # input:  1 * $0.0375/M = $0.0000000375 / $0.001 = 0.0000375 credits = 37.5 micro -> 38
    # output: 1 * $0.15/M   = $0.00000015   / $0.001 = 0.00015 credits   = 150 micro (exact)
    assert [cl.credits for cl in result.items[0].lines] == [38, 150]
    assert result.total == 188


def test_a_tiny_line_never_rounds_to_zero() -> None:
    # 1 * $0.0001/M = $1e-10 / $0.001 = 1e-7 credits = 0.1 micro -> 1
    assert cost(line(TINY, input_tokens=1)).total == 1
    # exact values are not bumped: 1 * $0.02/M / $0.001 = 0.00002 credits = 20 micro
    assert cost(line(EMBED, input_tokens=1)).total == 20


def test_totals_are_sums_of_rounded_lines_not_rounded_sums() -> None:
    result = cost(line(R7B, input_tokens=1), line(R7B, input_tokens=1), line(R7B, input_tokens=1))
    # each item 37.5 micro -> 38; total 3 * 38 = 114, although the exact sum is 112.5 -> 113
    assert [i.credits for i in result.items] == [38, 38, 38]
    assert result.total == 114
    assert result.total == sum(cl.credits for i in result.items for cl in i.lines)


# --- output ranges ----------------------------------------------------------------------------


def test_max_output_tokens_gives_minimum_expected_maximum() -> None:
    result = cost(line(GPT_4O, input_tokens=1000, max_output_tokens=1001))
    # minimum:  input only                                = 2.5 credits
    # expected: output ceil(1001 / 2) = 501 * $10/M      = 5.01 -> 7.51 credits
    # maximum:  output 1001 * $10/M                       = 10.01 -> 12.51 credits
    assert (result.minimum, result.total, result.maximum) == (2_500_000, 7_510_000, 12_510_000)
    assert by_class(result)[TokenClass.OUTPUT][0] == 501  # the items show the expected case


def test_expected_output_is_given_output_tokens_when_set() -> None:
    result = cost(line(GPT_4O, input_tokens=1000, output_tokens=300, max_output_tokens=1000))
    # min 2.5; expected 2.5 + 300 * $10/M = 2.5 + 3 = 5.5; max 2.5 + 10 = 12.5 credits
    assert (result.minimum, result.total, result.maximum) == (2_500_000, 5_500_000, 12_500_000)


def test_ranges_add_across_lines_and_include_the_tier() -> None:
    result = estimate(
        book(),
        usage(
            line(GPT_4O, max_output_tokens=100),
            line(SONNET, input_tokens=1000),
            tier="TIER_1A",
        ),
        (),
        NOW,
    )
    # gpt-4o: min 0, expected 50 * $10/M = 0.5, max 100 * $10/M = 1 credit
    # sonnet input 1000 * $3/M = 3 credits; tier 10 credits
    assert (result.minimum, result.total, result.maximum) == (13 * C, 13_500_000, 14 * C)


def test_price_case_maximum_is_what_a_hold_is_sized_at() -> None:
    u = usage(line(GPT_4O, input_tokens=1000, max_output_tokens=1001))
    held = price_case(book(), u, (), NOW, field="estimate", case="maximum")
    assert held.total == 12_510_000
    assert by_class(held)[TokenClass.OUTPUT][0] == 1001


# --- validation --------------------------------------------------------------------------------

GOOD = line(GPT_4O, input_tokens=1)
REFUSED: list[tuple[str, Usage, bool, str]] = [
    (
        "negative",
        usage(GOOD, line(GPT_4O, output_tokens=-1)),
        False,
        "usage.lines[1].output_tokens",
    ),
    (
        "absurd",
        usage(line(GPT_4O, input_tokens=MAX_QUANTITY + 1)),
        False,
        "usage.lines[0].input_tokens",
    ),
    (
        "negative max",
        usage(line(GPT_4O, max_output_tokens=-1)),
        False,
        "usage.lines[0].max_output_tokens",
    ),
    (
        "absurd max",
        usage(line(GPT_4O, max_output_tokens=MAX_QUANTITY + 1)),
        False,
        "usage.lines[0].max_output_tokens",
    ),
    (
        "max on actual",
        usage(GOOD, line(GPT_4O, max_output_tokens=10)),
        True,
        "usage.lines[1].max_output_tokens",
    ),
    (
        "output above max",
        usage(line(GPT_4O, output_tokens=11, max_output_tokens=10)),
        False,
        "usage.lines[0].output_tokens",
    ),
    ("nothing", usage(), False, "usage"),
    ("too many lines", usage(*[GOOD] * (MAX_LINES + 1)), False, "usage.lines"),
    (
        "negative tier quantity",
        usage(tier="TIER_1A", tier_quantity=-1),
        False,
        "usage.tier_quantity",
    ),
    (
        "empty provider",
        usage(UsageLine("", "gpt-4o", input_tokens=1)),
        False,
        "usage.lines[0].provider",
    ),
    ("empty model", usage(UsageLine("openai", "", input_tokens=1)), False, "usage.lines[0].model"),
]


@pytest.mark.parametrize(("case", "u", "actual", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_validate_usage_refuses_naming_the_field(
    case: str, u: Usage, actual: bool, field: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        validate_usage(u, "usage", actual=actual)
    assert caught.value.field == field
    assert caught.value.metadata == {"field": field}


def test_validate_usage_accepts_the_limits() -> None:
    every_field = {name: MAX_QUANTITY for name in QUANTITY_FIELD.values()}
    validate_usage(usage(line(GPT_4O, **every_field)), "usage", actual=True)
    validate_usage(usage(*[GOOD] * MAX_LINES), "usage", actual=True)
    validate_usage(usage(line(GPT_4O, max_output_tokens=0)), "usage", actual=False)
    validate_usage(usage(tier="TIER_1A", tier_quantity=MAX_QUANTITY), "usage", actual=False)
    # the prefix is the caller's field: estimate on a hold, actual_usage on a commit
    with pytest.raises(InvalidField) as caught:
        validate_usage(usage(line(GPT_4O, max_output_tokens=5)), "actual_usage", actual=True)
    assert caught.value.field == "actual_usage.lines[0].max_output_tokens"


def test_the_largest_usage_prices_without_overflow() -> None:
    every_field = {name: MAX_QUANTITY for name in QUANTITY_FIELD.values() if name != "units"}
    result = cost(line(SONNET, **{k: v for k, v in every_field.items() if k != "requests"}))
    # 10^12 tokens * ($3 + $0.30 + $3.75 + $15 + $15 reasoning at the output price) / M
    # = $37.05M / $0.001 = 37_050_000_000 credits
    assert result.total == 37_050_000_000 * C


@pytest.mark.parametrize(
    ("model", "counts", "field"),
    [
        (EMBED, {"output_tokens": 1}, "usage.lines[0].output_tokens"),
        (EMBED, {"reasoning_tokens": 1}, "usage.lines[0].reasoning_tokens"),
        (IMAGES, {"input_tokens": 1}, "usage.lines[0].input_tokens"),
        (GPT_4O, {"cache_write_tokens": 1}, "usage.lines[0].cache_write_tokens"),
        (GPT_4O, {"requests": 1}, "usage.lines[0].requests"),
        (SEARCH, {"units": 1}, "usage.lines[0].units"),
    ],
)
def test_a_class_without_a_price_is_refused_naming_the_field(
    model: ModelPrice, counts: dict[str, int], field: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        cost(line(model, **counts))
    assert caught.value.field == field
    assert f"{model.provider}/{model.model}" in caught.value.message
    # a zero count of an unpriced class is fine
    assert cost(line(model, **{k: 0 for k in counts})).total == 0


def test_unknown_model_and_tier_are_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        cost(line(GPT_4O, input_tokens=1), UsageLine("openai", "gpt-99", input_tokens=1))
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert caught.value.metadata == {"model": "openai/gpt-99"}
    with pytest.raises(NotFound) as caught:
        cost(UsageLine("nobody", "gpt-4o", input_tokens=1))
    assert caught.value.metadata == {"model": "nobody/gpt-4o"}
    with pytest.raises(NotFound) as caught:
        estimate(book(), usage(tier="TIER_9"), (), NOW)
    assert caught.value.reason == "TIER_NOT_FOUND"
    assert caught.value.metadata == {"tier": "TIER_9"}


# --- overruns and comparisons ---------------------------------------------------------------


@pytest.mark.parametrize("policy", list(OverrunPolicy))
def test_charge_within_the_hold_is_the_actual_cost(policy: OverrunPolicy) -> None:
    assert charge_for_overrun(5 * C, 4 * C, policy) == 4 * C
    assert charge_for_overrun(5 * C, 5 * C, policy) == 5 * C
    assert charge_for_overrun(5 * C, 0, policy) == 0


def test_overrun_policies() -> None:
    assert charge_for_overrun(5 * C, 6_500_000, OverrunPolicy.CAP) == 5 * C
    assert charge_for_overrun(5 * C, 6_500_000, OverrunPolicy.ALLOW_FROM_BALANCE) == 6_500_000
    with pytest.raises(FailedPrecondition) as caught:
        charge_for_overrun(5 * C, 6_500_000, OverrunPolicy.REJECT)
    assert caught.value.reason == "OVERRUN_REJECTED"
    assert caught.value.metadata == {"held": "5", "actual": "6.5"}
    # one micro-credit over is an overrun too
    with pytest.raises(FailedPrecondition):
        charge_for_overrun(5 * C, 5 * C + 1, OverrunPolicy.REJECT)


def test_compare_sets_estimate_beside_actual_per_model_and_class() -> None:
    b = book()
    estimated = price_case(
        b,
        usage(
            line(GPT_4O, input_tokens=1000, max_output_tokens=1000),
            line(SONNET, input_tokens=2000),
        ),
        (),
        NOW,
        field="estimate",
        case="maximum",
    )
    actual = price_case(
        b,
        usage(
            line(GPT_4O, input_tokens=600, output_tokens=200),
            line(GPT_4O, input_tokens=400, cached_input_tokens=800),
            line(SONNET, input_tokens=2000),
        ),
        (),
        NOW,
        field="actual_usage",
        case="expected",
    )
    rows = [
        (
            r.provider,
            r.model,
            r.token_class,
            r.estimated_quantity,
            r.actual_quantity,
            r.estimated_credits,
            r.actual_credits,
        )
        for r in compare(estimated, actual)
    ]
    # gpt-4o input: est 1000 -> 2.5 credits; actual 600 + 400 -> 1.5 + 1.0 credits
    # gpt-4o output: est 1000 -> 10 credits; actual 200 -> 2 credits
    # sonnet input: 2000 -> 6 credits both
    # gpt-4o cached input (not estimated): 800 * $1.25/M = $0.001 -> 1 credit, listed last
    assert rows == [
        ("openai", "gpt-4o", TokenClass.INPUT, 1000, 1000, 2_500_000, 2_500_000),
        ("openai", "gpt-4o", TokenClass.OUTPUT, 1000, 200, 10 * C, 2 * C),
        ("anthropic", "claude-sonnet", TokenClass.INPUT, 2000, 2000, 6 * C, 6 * C),
        ("openai", "gpt-4o", TokenClass.CACHED_INPUT, 0, 800, 0, 1 * C),
    ]


# --- the rule as a property ---------------------------------------------------------------------

PRICES = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
COUNTS = st.integers(min_value=0, max_value=10**9)


@st.composite
def priced_models(draw: st.DrawFn) -> ModelPrice:
    return ModelPrice(
        "prop",
        "m",
        input_per_mtok=draw(PRICES),
        cached_input_per_mtok=draw(PRICES),
        cache_write_per_mtok=draw(PRICES),
        output_per_mtok=draw(PRICES),
        reasoning_per_mtok=draw(st.none() | PRICES),
        per_request=draw(PRICES),
        per_unit=draw(PRICES),
        unit="image",
    )


def exact_micros(
    quantity: int, price: Decimal, per_million: bool, b: PriceBook, disc: Decimal
) -> int:
    value = (
        Fraction(quantity)
        * Fraction(price)
        / (1_000_000 if per_million else 1)
        * (1 + Fraction(b.markup))
        * (1 - Fraction(disc) / 100)
        / Fraction(b.credit_usd)
        * C
    )
    return math.ceil(value)


@given(
    model=priced_models(),
    counts=st.fixed_dictionaries({name: COUNTS for name in QUANTITY_FIELD.values()}),
    credit_usd=st.sampled_from(["0.001", "0.01", "0.003", "1", "0.0007"]),
    markup=st.sampled_from(["0", "0.2", "0.15", "1.333"]),
    discount=st.none() | st.decimals(min_value=0, max_value=100, places=4),
)
def test_each_line_is_the_ceiling_of_the_exact_formula_and_totals_are_sums(
    model: ModelPrice,
    counts: dict[str, int],
    credit_usd: str,
    markup: str,
    discount: Decimal | None,
) -> None:
    b = replace(book(credit_usd, markup), models=(model,))
    overrides = (
        () if discount is None else (override("m", provider="prop", discount=str(discount)),)
    )
    result = estimate(b, usage(UsageLine("prop", "m", **counts)), overrides, NOW)
    per_million = {
        TokenClass.INPUT,
        TokenClass.CACHED_INPUT,
        TokenClass.CACHE_WRITE,
        TokenClass.OUTPUT,
        TokenClass.REASONING,
    }
    expected = {
        tc: exact_micros(
            counts[QUANTITY_FIELD[tc]],
            model.price_of(tc) or Decimal(0),
            tc in per_million,
            b,
            discount or Decimal(0),
        )
        for tc in TokenClass
        if counts[QUANTITY_FIELD[tc]]
    }
    assert {cl.token_class: cl.credits for cl in result.items[0].lines} == expected
    assert result.items[0].credits == sum(expected.values())
    assert result.total == result.minimum == result.maximum == sum(expected.values())


@given(
    model=priced_models(),
    counts=st.fixed_dictionaries({name: COUNTS for name in QUANTITY_FIELD.values()}),
    bump_field=st.sampled_from(sorted(QUANTITY_FIELD.values())),
    bump=st.integers(min_value=1, max_value=10**6),
    markup=st.sampled_from(["0", "0.2"]),
)
def test_cost_is_monotonic_in_each_quantity(
    model: ModelPrice, counts: dict[str, int], bump_field: str, bump: int, markup: str
) -> None:
    b = replace(book("0.003", markup), models=(model,))
    before = estimate(b, usage(UsageLine("prop", "m", **counts)), (), NOW)
    more = {**counts, bump_field: counts[bump_field] + bump}
    after = estimate(b, usage(UsageLine("prop", "m", **more)), (), NOW)
    assert after.total >= before.total
    before_lines = {cl.token_class: cl.credits for cl in before.items[0].lines}
    after_lines = {cl.token_class: cl.credits for cl in after.items[0].lines}
    for token_class, credits in before_lines.items():
        assert after_lines[token_class] >= credits


@given(
    output=st.integers(min_value=0, max_value=10**6),
    extra=st.integers(min_value=0, max_value=10**6),
    given_output=st.booleans(),
)
def test_minimum_expected_maximum_are_ordered(output: int, extra: int, given_output: bool) -> None:
    maximum = output + extra
    result = cost(
        line(
            GPT_4O,
            input_tokens=123,
            output_tokens=output if given_output else 0,
            max_output_tokens=maximum,
        )
    )
    assert result.minimum <= result.total <= result.maximum
    expected_output = output if given_output and output else -(-maximum // 2)
    assert result.total == cost(line(GPT_4O, input_tokens=123, output_tokens=expected_output)).total
