"""Exact credit amounts: decimal strings at the edges, integer micro-credits everywhere else.

One credit is 1,000,000 micro-credits. Parsing goes through Decimal, never float, and refuses
anything that is not a plain decimal with at most six fractional digits, so no amount is ever
rounded on the way in (DESIGN §5).
"""

from __future__ import annotations

import re
from decimal import Decimal

from billing_service.domain.errors import InvalidField

MICROS_PER_CREDIT = 1_000_000
# One call moves at most a billion credits; an account holds at most a thousand times that.
# Both keep every sum well inside a signed 64-bit column.
MAX_AMOUNT_MICROS = 1_000_000_000 * MICROS_PER_CREDIT
MAX_BALANCE_MICROS = 1_000 * MAX_AMOUNT_MICROS

# ASCII digits only (\d would admit other scripts' digits), matched in full (no trailing \n).
_DECIMAL = re.compile(r"(?P<int>[0-9]{1,13})(?:\.(?P<frac>[0-9]{1,6}))?")


def parse_amount(text: str, field: str, *, allow_zero: bool = False) -> int:
    """Parse a positive decimal string such as "12.5" into micro-credits.

    Raises InvalidField naming `field` for anything else: signs, exponents, spaces, more than
    six fractional digits, zero (unless allowed) or more than MAX_AMOUNT_MICROS.
    """
    match = _DECIMAL.fullmatch(text)
    if match is None:
        if not text:
            raise InvalidField(field, "is required: a decimal amount such as 12.5")
        raise InvalidField(
            field,
            f"must be a plain decimal with at most 6 fractional digits, got {text[:40]!r}",
        )
    micros = int(match["int"]) * MICROS_PER_CREDIT + int((match["frac"] or "").ljust(6, "0"))
    if micros == 0 and not allow_zero:
        raise InvalidField(field, "must be greater than zero")
    if micros > MAX_AMOUNT_MICROS:
        raise InvalidField(field, f"must be at most {format_amount(MAX_AMOUNT_MICROS)}")
    return micros


def format_amount(micros: int) -> str:
    """Render micro-credits as the shortest exact decimal string: 12500000 -> "12.5"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_CREDIT)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def to_decimal(micros: int) -> Decimal:
    """The exact Decimal value of an amount in micro-credits."""
    return Decimal(micros).scaleb(-6)
