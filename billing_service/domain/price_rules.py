"""What a valid price, tier or override is, for every way one arrives (RPC, file, CLI)."""

from __future__ import annotations

import re
from decimal import Decimal

from billing_service.domain.errors import InvalidField
from billing_service.domain.pricing import ModelPrice, Tier

UNITS = frozenset({"image", "second", "character"})
MAX_USD = Decimal(1_000_000)

_DECIMAL = re.compile(r"[0-9]{1,13}(?:\.[0-9]{1,12})?")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MODEL = re.compile(r"[\x21-\x7e]{1,128}")
_TIER = re.compile(r"[A-Z0-9_]{1,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_usd(text: str | None, field: str, *, positive: bool = False) -> Decimal | None:
    """A non-negative USD decimal string (at most 12 fractional digits), or None when empty."""
    if text is None or text == "":
        return None
    if not _DECIMAL.fullmatch(text):
        raise InvalidField(field, f"must be a plain decimal such as 2.50, got {text[:40]!r}")
    value = Decimal(text)
    if value > MAX_USD:
        raise InvalidField(field, f"must be at most {MAX_USD}")
    if positive and value == 0:
        raise InvalidField(field, "must be greater than zero")
    return value


def parse_percent(text: str, field: str) -> Decimal:
    """A percentage from 0 to 100 with at most 4 fractional digits."""
    if not re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,4})?", text) or Decimal(text) > 100:
        raise InvalidField(field, "must be a percentage from 0 to 100, such as 12.5")
    return Decimal(text)


def check_provider(value: str, field: str) -> str:
    """A provider id: lowercase letters, digits, dot, dash, underscore; 1 to 64 characters."""
    if not _PROVIDER.fullmatch(value):
        raise InvalidField(field, "must be a lowercase id such as openai (1 to 64 characters)")
    return value


def check_model(value: str, field: str) -> str:
    """A model id: 1 to 128 printable ASCII characters without spaces."""
    if not _MODEL.fullmatch(value):
        raise InvalidField(field, "must be 1 to 128 printable ASCII characters without spaces")
    return value


def check_model_price(price: ModelPrice, field: str) -> ModelPrice:
    """A model price that can be used: ids valid, at least one price, unit given with per_unit."""
    check_provider(price.provider, f"{field}.provider")
    check_model(price.model, f"{field}.model")
    if price.model == "*":
        raise InvalidField(f"{field}.model", "'*' is only for overrides")
    prices = [
        price.input_per_mtok,
        price.cached_input_per_mtok,
        price.cache_write_per_mtok,
        price.output_per_mtok,
        price.reasoning_per_mtok,
        price.per_request,
        price.per_unit,
    ]
    if all(p is None for p in prices):
        raise InvalidField(field, "must set at least one price")
    if price.per_unit is not None and price.unit not in UNITS:
        raise InvalidField(f"{field}.unit", f"must be one of {sorted(UNITS)} with per_unit")
    if price.per_unit is None and price.unit:
        raise InvalidField(f"{field}.unit", "is only for models with per_unit")
    if price.as_of and not _DATE.fullmatch(price.as_of):
        raise InvalidField(f"{field}.as_of", "must be a date YYYY-MM-DD")
    if len(price.source) > 500:
        raise InvalidField(f"{field}.source", "must be at most 500 characters")
    return price


def check_tier(tier: Tier, field: str) -> Tier:
    """A tier with a valid name and texts."""
    if not _TIER.fullmatch(tier.name):
        raise InvalidField(f"{field}.name", "must be 1 to 64 characters A-Z, 0-9 or _")
    if len(tier.fee_unit) > 64:
        raise InvalidField(f"{field}.fee_unit", "must be at most 64 characters")
    if len(tier.description) > 500:
        raise InvalidField(f"{field}.description", "must be at most 500 characters")
    return tier


def check_credit_value(credit_usd: Decimal | None, markup: Decimal | None) -> None:
    """A positive credit value and a markup from 0 to 10 (1000 %)."""
    if credit_usd is not None and credit_usd == 0:
        raise InvalidField("credit_usd", "must be greater than zero")
    if markup is not None and markup > 10:
        raise InvalidField("markup", "must be at most 10 (1000 %)")
