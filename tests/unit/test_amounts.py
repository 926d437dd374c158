"""Exact amounts: what parses, what is refused, and that formatting round-trips."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_service.domain.amounts import (
    MAX_AMOUNT_MICROS,
    format_amount,
    parse_amount,
    to_decimal,
)
from billing_service.domain.errors import InvalidField


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1", 1_000_000),
        ("12.5", 12_500_000),
        ("0.000001", 1),
        ("007.10", 7_100_000),
        ("1000000000", MAX_AMOUNT_MICROS),
    ],
)
def test_parses_plain_decimals(text: str, micros: int) -> None:
    assert parse_amount(text, "amount") == micros


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e3",
        "1.0000001",
        " 1",
        "1 ",
        "1,5",
        "abc",
        ".5",
        "5.",
        "NaN",
        "Infinity",
        "0x10",
        "1000000000.000001",
        "99999999999999",
        "١٢",
        "1\n",
        "1.5\n",
    ],
)
def test_refuses_everything_else_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_amount(text, "amount")
    assert caught.value.field == "amount"


def test_zero_only_where_allowed() -> None:
    with pytest.raises(InvalidField, match="greater than zero"):
        parse_amount("0", "amount")
    assert parse_amount("0.0", "amount", allow_zero=True) == 0


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "0"), (12_500_000, "12.5"), (-3_250_000, "-3.25"), (1, "0.000001"), (-1, "-0.000001")],
)
def test_formats_shortest_exact_decimal(micros: int, text: str) -> None:
    assert format_amount(micros) == text


@given(st.integers(min_value=1, max_value=MAX_AMOUNT_MICROS))
def test_format_then_parse_round_trips(micros: int) -> None:
    text = format_amount(micros)
    assert parse_amount(text, "amount") == micros
    assert to_decimal(micros) == Decimal(text)
