"""The charge matrix and how usage is priced from it (DESIGN §1 token-priced usage, §3 price book).

Rounding rule, the one place it is decided: each cost line (one token class of one usage line)
is computed exactly in Decimal — quantity * unit price * (1 + markup) * (1 - discount) / credit
value — and then rounded UP to the next micro-credit, so no line is ever undercharged by
rounding. Item subtotals and totals are sums of rounded lines, so an itemized answer always
adds up exactly. Tier base fees are whole micro-credit amounts and are not marked up.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Literal

from billing_service.domain.amounts import MICROS_PER_CREDIT
from billing_service.domain.errors import FailedPrecondition, InvalidField, NotFound

MAX_QUANTITY = 1_000_000_000_000  # a trillion tokens, requests or units in one line is absurd
MAX_LINES = 100
_EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_CEILING)
_MILLION = Decimal(1_000_000)
Case = Literal["minimum", "expected", "maximum"]


class TokenClass(StrEnum):
    """One priced quantity of a model call."""

    INPUT = "INPUT"
    CACHED_INPUT = "CACHED_INPUT"
    CACHE_WRITE = "CACHE_WRITE"
    OUTPUT = "OUTPUT"
    REASONING = "REASONING"
    REQUEST = "REQUEST"
    UNIT = "UNIT"


PER_MILLION = frozenset(
    {
        TokenClass.INPUT,
        TokenClass.CACHED_INPUT,
        TokenClass.CACHE_WRITE,
        TokenClass.OUTPUT,
        TokenClass.REASONING,
    }
)

# The usage-line field that counts each class, named as in the API.
QUANTITY_FIELD: Mapping[TokenClass, str] = {
    TokenClass.INPUT: "input_tokens",
    TokenClass.CACHED_INPUT: "cached_input_tokens",
    TokenClass.CACHE_WRITE: "cache_write_tokens",
    TokenClass.OUTPUT: "output_tokens",
    TokenClass.REASONING: "reasoning_tokens",
    TokenClass.REQUEST: "requests",
    TokenClass.UNIT: "units",
}


# The price fields of a ModelPrice, named as in the API, the database and price book files.
PRICE_FIELDS = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
    "per_request",
    "per_unit",
)
# The price field of each token class, in TokenClass order.
_PRICE_FIELD: Mapping[TokenClass, str] = dict(zip(TokenClass, PRICE_FIELDS, strict=True))


class OverrunPolicy(StrEnum):
    """What a commit does when the actual cost is above the hold."""

    REJECT = "REJECT"
    CAP = "CAP"
    ALLOW_FROM_BALANCE = "ALLOW_FROM_BALANCE"


@dataclass(frozen=True)
class ModelPrice:
    """One model's USD prices: per million tokens, per request, per unit; None = no charge."""

    provider: str
    model: str
    input_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None
    per_request: Decimal | None = None
    per_unit: Decimal | None = None
    unit: str = ""
    source: str = ""
    as_of: str = ""

    def price_of(self, token_class: TokenClass) -> Decimal | None:
        """The USD price of one million tokens (or one request or unit) of a class.

        Reasoning tokens without a price of their own are billed at the output price, as the
        providers that bill them do.
        """
        price: Decimal | None = getattr(self, _PRICE_FIELD[token_class])
        if price is None and token_class is TokenClass.REASONING:
            return self.output_per_mtok
        return price

    @cached_property
    def rates(self) -> tuple[tuple[TokenClass, str, Decimal | None, Decimal | None], ...]:
        """Per token class, in order: its usage field, its price (price_of) and the USD price
        of one token, request or unit (None where unpriced). Worked out once per price."""
        rates = []
        for token_class in TokenClass:
            price = self.price_of(token_class)
            per_one = price
            if price is not None and token_class in PER_MILLION:
                per_one = _EXACT.divide(price, _MILLION)
            rates.append((token_class, QUANTITY_FIELD[token_class], price, per_one))
        return tuple(rates)


@dataclass(frozen=True)
class Tier:
    """A base fee in micro-credits per unit of work."""

    name: str
    base_fee: int
    fee_unit: str
    description: str


@dataclass(frozen=True)
class PriceBook:
    """One immutable version of the charge matrix."""

    version: int
    effective_at: datetime
    credit_usd: Decimal
    markup: Decimal
    note: str
    created_at: datetime
    models: tuple[ModelPrice, ...]
    tiers: tuple[Tier, ...]

    def model(self, provider: str, model: str) -> ModelPrice:
        """The model's price, or NotFound naming it."""
        price = self._by_model.get((provider, model))
        if price is None:
            raise NotFound("MODEL", "model", f"{provider}/{model}")
        return price

    @cached_property
    def _by_model(self) -> dict[tuple[str, str], ModelPrice]:
        """The models by provider and model; the first wins, as a scan in order would."""
        found: dict[tuple[str, str], ModelPrice] = {}
        for price in self.models:
            found.setdefault((price.provider, price.model), price)
        return found

    def tier(self, name: str) -> Tier:
        """The tier, or NotFound naming it."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise NotFound("TIER", "tier", name)

    def with_changes(
        self,
        *,
        version: int,
        effective_at: datetime,
        created_at: datetime,
        note: str,
        models: Sequence[ModelPrice] = (),
        tiers: Sequence[Tier] = (),
        credit_usd: Decimal | None = None,
        markup: Decimal | None = None,
    ) -> PriceBook:
        """The next version: this one's prices and tiers with the given ones added or replaced."""
        by_model = {(m.provider, m.model): m for m in self.models}
        by_model.update({(m.provider, m.model): m for m in models})
        by_tier = {t.name: t for t in self.tiers}
        by_tier.update({t.name: t for t in tiers})
        return PriceBook(
            version=version,
            effective_at=effective_at,
            credit_usd=self.credit_usd if credit_usd is None else credit_usd,
            markup=self.markup if markup is None else markup,
            note=note,
            created_at=created_at,
            models=tuple(by_model[k] for k in sorted(by_model)),
            tiers=tuple(by_tier[k] for k in sorted(by_tier)),
        )


@dataclass(frozen=True)
class PriceOverride:
    """An account's fixed price or discount for one model ("*": all of a provider's models)."""

    id: str
    account_id: str
    provider: str
    model: str
    fixed: ModelPrice | None
    discount_percent: Decimal | None
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime

    def applies(self, provider: str, model: str, at: datetime) -> bool:
        """True when the override covers this model at this time."""
        return (
            self.provider == provider
            and self.model in (model, "*")
            and self.effective_at <= at
            and (self.expires_at is None or at < self.expires_at)
        )


@dataclass(frozen=True)
class UsageLine:
    """One model's usage: counted, or expected with an optional maximum output."""

    provider: str
    model: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0
    units: int = 0
    max_output_tokens: int | None = None

    def quantity(self, token_class: TokenClass, case: Case = "expected") -> int:
        """How many of a class the line uses in the given case."""
        if token_class is TokenClass.OUTPUT and self.max_output_tokens is not None:
            if case == "minimum":
                return 0
            if case == "maximum":
                return self.max_output_tokens
            return self.output_tokens or -(-self.max_output_tokens // 2)
        value: int = getattr(self, QUANTITY_FIELD[token_class])
        return value


@dataclass(frozen=True)
class Usage:
    """Model lines plus an optional tier's base fee."""

    lines: tuple[UsageLine, ...]
    tier: str = ""
    tier_quantity: int = 0


@dataclass(frozen=True)
class CostLine:
    """One priced quantity."""

    token_class: TokenClass
    quantity: int
    unit_price: Decimal
    credits: int


@dataclass(frozen=True)
class CostItem:
    """The cost of one usage line."""

    provider: str
    model: str
    lines: tuple[CostLine, ...]
    credits: int
    adjustment: str


@dataclass(frozen=True)
class Cost:
    """An itemized price under one price book version; totals in micro-credits."""

    items: tuple[CostItem, ...]
    tier: str
    base_fee: int
    total: int
    minimum: int
    maximum: int
    version: int
    credit_usd: Decimal
    markup: Decimal

    @property
    def total_usd(self) -> Decimal:
        """The total in USD at the version's credit value."""
        return _EXACT.multiply(Decimal(self.total) / _MILLION, self.credit_usd).normalize()


@dataclass(frozen=True)
class HoldPricing:
    """What an estimate-sized hold pinned: the version, overrides and its maximum-case cost."""

    version: int
    usage: Usage
    overrides: tuple[PriceOverride, ...]
    priced_at: datetime
    estimate: Cost


@dataclass(frozen=True)
class Comparison:
    """A hold's estimate beside the actual usage for one model and token class."""

    provider: str
    model: str
    token_class: TokenClass
    estimated_quantity: int
    actual_quantity: int
    estimated_credits: int
    actual_credits: int


def validate_usage(usage: Usage, field: str, *, actual: bool) -> None:
    """Refuse counts that are negative or absurd, and maxima on actual usage."""
    if not usage.lines and not usage.tier:
        raise InvalidField(field, "needs at least one line or a tier")
    if len(usage.lines) > MAX_LINES:
        raise InvalidField(f"{field}.lines", f"must have at most {MAX_LINES} lines")
    if not 0 <= usage.tier_quantity <= MAX_QUANTITY:
        raise InvalidField(f"{field}.tier_quantity", "must be from 0 to 10^12")
    for i, line in enumerate(usage.lines):
        where = f"{field}.lines[{i}]"
        if not line.provider:
            raise InvalidField(f"{where}.provider", "is required")
        if not line.model:
            raise InvalidField(f"{where}.model", "is required")
        for name in (*QUANTITY_FIELD.values(), "max_output_tokens"):
            value = getattr(line, name)
            if value is not None and not 0 <= value <= MAX_QUANTITY:
                raise InvalidField(f"{where}.{name}", "must be from 0 to 10^12")
        if line.max_output_tokens is not None:
            if actual:
                raise InvalidField(f"{where}.max_output_tokens", "is for estimates only")
            if line.output_tokens > line.max_output_tokens:
                raise InvalidField(f"{where}.output_tokens", "must not exceed max_output_tokens")


def estimate(
    book: PriceBook,
    usage: Usage,
    overrides: Sequence[PriceOverride],
    at: datetime,
    field: str = "usage",
) -> Cost:
    """Price usage: items and totals for the expected case, with its minimum and maximum."""
    expected = price_case(book, usage, overrides, at, field=field, case="expected")
    if not any(line.max_output_tokens is not None for line in usage.lines):
        return expected
    minimum = price_case(book, usage, overrides, at, field=field, case="minimum")
    maximum = price_case(book, usage, overrides, at, field=field, case="maximum")
    return replace(expected, minimum=minimum.total, maximum=maximum.total)


def charge_for_overrun(held: int, actual: int, policy: OverrunPolicy) -> int:
    """What to charge when settling a hold of `held` for `actual`, under the policy."""
    if actual <= held or policy is OverrunPolicy.ALLOW_FROM_BALANCE:
        return actual
    if policy is OverrunPolicy.CAP:
        return held
    raise FailedPrecondition(
        f"actual cost {Decimal(actual) / MICROS_PER_CREDIT} is above the hold of "
        f"{Decimal(held) / MICROS_PER_CREDIT} and the hold's overrun policy is REJECT",
        reason="OVERRUN_REJECTED",
        held=str(Decimal(held) / MICROS_PER_CREDIT),
        actual=str(Decimal(actual) / MICROS_PER_CREDIT),
    )


def price_case(
    book: PriceBook,
    usage: Usage,
    overrides: Sequence[PriceOverride],
    at: datetime,
    *,
    field: str,
    case: Case,
) -> Cost:
    """Price usage in one case; an estimate-sized hold is priced (and compared) at "maximum"."""
    items = tuple(
        _price_line(book, line, overrides, at, where=f"{field}.lines[{i}]", case=case)
        for i, line in enumerate(usage.lines)
    )
    base_fee = 0
    if usage.tier:
        base_fee = book.tier(usage.tier).base_fee * (usage.tier_quantity or 1)
    total = sum(item.credits for item in items) + base_fee
    return Cost(
        items=items,
        tier=usage.tier,
        base_fee=base_fee,
        total=total,
        minimum=total,
        maximum=total,
        version=book.version,
        credit_usd=book.credit_usd,
        markup=book.markup,
    )


def _price_line(
    book: PriceBook,
    line: UsageLine,
    overrides: Sequence[PriceOverride],
    at: datetime,
    *,
    where: str,
    case: Case,
) -> CostItem:
    listed = book.model(line.provider, line.model)
    override = _override_for(overrides, line.provider, line.model, at)
    price, discount, adjustment = listed, Decimal(0), ""
    if override is not None and override.fixed is not None:
        price = override.fixed
        adjustment = f"fixed price {override.id}"
    elif override is not None and override.discount_percent is not None:
        discount = override.discount_percent
        adjustment = f"discount {discount.normalize():f}% {override.id}"
    factor = _EXACT.multiply(
        _EXACT.add(1, book.markup), _EXACT.subtract(1, _EXACT.divide(discount, 100))
    )
    lines = []
    for token_class, quantity_field, unit_price, per_one in price.rates:
        quantity = (
            line.quantity(token_class, case)
            if token_class is TokenClass.OUTPUT
            else getattr(line, quantity_field)
        )
        if quantity == 0:
            continue
        if unit_price is None or per_one is None:
            raise InvalidField(
                f"{where}.{quantity_field}",
                f"is not priced for {line.provider}/{line.model}",
            )
        usd = _EXACT.multiply(_EXACT.multiply(per_one, quantity), factor)
        micros = _EXACT.divide(_EXACT.multiply(usd, MICROS_PER_CREDIT), book.credit_usd)
        credits = int(micros.to_integral_value(rounding=decimal.ROUND_CEILING))
        lines.append(CostLine(token_class, quantity, unit_price, credits))
    return CostItem(
        provider=line.provider,
        model=line.model,
        lines=tuple(lines),
        credits=sum(cl.credits for cl in lines),
        adjustment=adjustment,
    )


def _override_for(
    overrides: Sequence[PriceOverride], provider: str, model: str, at: datetime
) -> PriceOverride | None:
    """The newest override for the exact model, else the newest for all the provider's models."""
    matching = [o for o in overrides if o.applies(provider, model, at)]
    exact = [o for o in matching if o.model == model]
    chosen = exact or matching
    return max(chosen, key=lambda o: (o.created_at, o.id)) if chosen else None


def compare(estimated: Cost, actual: Cost) -> tuple[Comparison, ...]:
    """Estimate and actual per model and token class, in the estimate's order."""
    keys: list[tuple[str, str, TokenClass]] = []
    sums: dict[tuple[str, str, TokenClass], list[int]] = {}
    for position, cost in enumerate((estimated, actual)):
        for item in cost.items:
            for line in item.lines:
                key = (item.provider, item.model, line.token_class)
                if key not in sums:
                    keys.append(key)
                    sums[key] = [0, 0, 0, 0]
                sums[key][position] += line.quantity
                sums[key][2 + position] += line.credits
    return tuple(Comparison(*key, *sums[key]) for key in keys)
