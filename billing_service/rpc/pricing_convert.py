"""Translation between creditline.v1 pricing messages and the pricing domain."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from creditline.v1 import pricing_pb2

from billing_service.db.price_books import PriceBookInfo
from billing_service.domain.amounts import format_amount
from billing_service.domain.price_rules import parse_usd
from billing_service.domain.pricing import (
    PRICE_FIELDS,
    Comparison,
    Cost,
    ModelPrice,
    PriceBook,
    PriceOverride,
    Tier,
    Usage,
    UsageLine,
)
from billing_service.rpc.wire import enum_out, time_out


def usage_in(message: pricing_pb2.Usage) -> Usage:
    """Usage from its message; the use case validates the counts."""
    return Usage(
        lines=tuple(
            UsageLine(
                provider=line.provider,
                model=line.model,
                input_tokens=line.input_tokens,
                cached_input_tokens=line.cached_input_tokens,
                cache_write_tokens=line.cache_write_tokens,
                output_tokens=line.output_tokens,
                reasoning_tokens=line.reasoning_tokens,
                requests=line.requests,
                units=line.units,
                max_output_tokens=(
                    line.max_output_tokens if line.HasField("max_output_tokens") else None
                ),
            )
            for line in message.lines
        ),
        tier=message.tier,
        tier_quantity=message.tier_quantity,
    )


def usage_lines_out(lines: Sequence[UsageLine]) -> list[pricing_pb2.UsageLine]:
    """Usage lines as messages."""
    return [
        pricing_pb2.UsageLine(
            provider=line.provider,
            model=line.model,
            input_tokens=line.input_tokens,
            cached_input_tokens=line.cached_input_tokens,
            cache_write_tokens=line.cache_write_tokens,
            output_tokens=line.output_tokens,
            reasoning_tokens=line.reasoning_tokens,
            requests=line.requests,
            units=line.units,
            max_output_tokens=line.max_output_tokens,
        )
        for line in lines
    ]


def model_price_in(message: pricing_pb2.ModelPrice, field: str) -> ModelPrice:
    """A model price from its message; each price string is checked, naming its field."""
    prices: dict[str, Decimal | None] = {
        name: parse_usd(getattr(message, name), f"{field}.{name}") for name in PRICE_FIELDS
    }
    return ModelPrice(
        provider=message.provider,
        model=message.model,
        unit=message.unit,
        source=message.source,
        as_of=message.as_of,
        **prices,
    )


def model_price_out(price: ModelPrice) -> pricing_pb2.ModelPrice:
    """A model price as a message; absent prices are empty strings."""
    return pricing_pb2.ModelPrice(
        provider=price.provider,
        model=price.model,
        unit=price.unit,
        source=price.source,
        as_of=price.as_of,
        **{name: _usd(getattr(price, name)) for name in PRICE_FIELDS},
    )


def tier_out(tier: Tier) -> pricing_pb2.Tier:
    """A tier as a message."""
    return pricing_pb2.Tier(
        name=tier.name,
        base_fee=format_amount(tier.base_fee),
        fee_unit=tier.fee_unit,
        description=tier.description,
    )


def price_book_out(book: PriceBook | PriceBookInfo) -> pricing_pb2.PriceBook:
    """A version's header as a message."""
    if isinstance(book, PriceBook):
        models, tiers = len(book.models), len(book.tiers)
    else:
        models, tiers = book.model_count, book.tier_count
    message = pricing_pb2.PriceBook(
        version=book.version,
        credit_usd=_usd(book.credit_usd),
        markup=_usd(book.markup),
        model_count=models,
        tier_count=tiers,
        note=book.note,
    )
    time_out(book.effective_at, message.effective_time)
    time_out(book.created_at, message.create_time)
    return message


def override_out(override: PriceOverride) -> pricing_pb2.AccountPriceOverride:
    """An account override as a message."""
    message = pricing_pb2.AccountPriceOverride(
        override_id=override.id,
        account_id=override.account_id,
        provider=override.provider,
        model=override.model,
        discount_percent=_usd(override.discount_percent),
    )
    if override.fixed is not None:
        message.fixed_price.CopyFrom(model_price_out(override.fixed))
    time_out(override.effective_at, message.effective_time)
    time_out(override.expires_at, message.expire_time)
    time_out(override.created_at, message.create_time)
    return message


def cost_out(cost: Cost) -> pricing_pb2.CostEstimate:
    """An itemized cost as a message."""
    return pricing_pb2.CostEstimate(
        items=[
            pricing_pb2.CostItem(
                provider=item.provider,
                model=item.model,
                lines=[
                    pricing_pb2.CostLine(
                        token_class=enum_out("TOKEN_CLASS", line.token_class),  # type: ignore[arg-type]
                        quantity=line.quantity,
                        unit_price_usd=_usd(line.unit_price),
                        credits=format_amount(line.credits),
                    )
                    for line in item.lines
                ],
                credits=format_amount(item.credits),
                adjustment=item.adjustment,
            )
            for item in cost.items
        ],
        tier=cost.tier,
        base_fee_credits=format_amount(cost.base_fee),
        total_credits=format_amount(cost.total),
        total_usd=_usd(cost.total_usd),
        price_book_version=cost.version,
        credit_usd=_usd(cost.credit_usd),
        markup=_usd(cost.markup),
        minimum_credits=format_amount(cost.minimum),
        maximum_credits=format_amount(cost.maximum),
    )


def comparisons_out(rows: Sequence[Comparison]) -> list[pricing_pb2.UsageComparison]:
    """Estimate-versus-actual rows as messages."""
    return [
        pricing_pb2.UsageComparison(
            provider=row.provider,
            model=row.model,
            token_class=enum_out("TOKEN_CLASS", row.token_class),  # type: ignore[arg-type]
            estimated_quantity=row.estimated_quantity,
            actual_quantity=row.actual_quantity,
            estimated_credits=format_amount(row.estimated_credits),
            actual_credits=format_amount(row.actual_credits),
        )
        for row in rows
    ]


def _usd(value: Decimal | None) -> str:
    """An exact decimal as plain text without exponent or trailing zeros; empty for None."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text
